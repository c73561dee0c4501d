//! Sync tokens: the position of each stream, written
//! `s<events>_<account data>_<to-device>_<receipts>_<typing>_<presence>_<device lists>` (tokens
//! issued before a stream existed lack its part, which reads as 0).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamToken {
    pub events: i64,
    pub account_data: i64,
    pub to_device: i64,
    pub receipts: i64,
    pub typing: i64,
    pub presence: i64,
    pub device_lists: i64,
}

impl StreamToken {
    pub fn parse(token: &str) -> Result<Self> {
        let bad = || Error::InvalidParam(format!("invalid sync token {token:?}"));
        let digits = token.strip_prefix('s').ok_or_else(bad)?;
        let parts: Vec<i64> = digits.split('_').map(|p| p.parse::<i64>().map_err(|_| bad())).collect::<Result<_>>()?;
        if parts.is_empty() || parts.len() > 7 || parts.iter().any(|p| *p < 0) {
            return Err(bad());
        }
        let at = |i: usize| parts.get(i).copied().unwrap_or(0);
        Ok(Self {
            events: at(0),
            account_data: at(1),
            to_device: at(2),
            receipts: at(3),
            typing: at(4),
            presence: at(5),
            device_lists: at(6),
        })
    }
}

impl std::fmt::Display for StreamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.account_data,
            self.to_device,
            self.receipts,
            self.typing,
            self.presence,
            self.device_lists
        )
    }
}

#[cfg(test)]
mod tests {
    use super::StreamToken;

    #[test]
    fn round_trip_and_garbage() {
        let token = StreamToken {
            events: 72,
            account_data: 4,
            to_device: 9,
            receipts: 3,
            typing: 10,
            presence: 2,
            device_lists: 5,
        };
        assert_eq!(StreamToken::parse(&token.to_string()).unwrap(), token);
        for bad in ["", "s", "x1_2", "s1_a", "s-1", "s1_2_3_4_5_6_7_8"] {
            assert!(StreamToken::parse(bad).is_err(), "{bad}");
        }
    }
}
