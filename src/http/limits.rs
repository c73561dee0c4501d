//! Rate limiting: a token bucket per client address for login and registration.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{
    config::LimitsConfig,
    error::{Error, Result},
};

pub struct AuthRateLimiter {
    /// `None` when `[limits] rate_limiting = false`.
    buckets: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AuthRateLimiter {
    pub fn new(config: &LimitsConfig) -> Self {
        let buckets = config.rate_limiting.then(|| {
            let per_minute = config.auth_per_minute.max(1);
            let period = Duration::from_millis(60_000 / u64::from(per_minute)).max(Duration::from_millis(1));
            let burst = NonZeroU32::new(config.auth_burst).unwrap_or(NonZeroU32::MIN);
            let quota =
                Quota::with_period(period).unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN)).allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        Self { buckets }
    }

    /// Takes one token from `ip`'s bucket, or says how long until one is there.
    pub fn check(&self, ip: IpAddr) -> Result<()> {
        let Some(buckets) = &self.buckets else { return Ok(()) };
        buckets.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Error::LimitExceeded { retry_after_ms: (wait.as_millis() as u64).max(1) }
        })
    }

    /// Forgets buckets that are full again, so memory stays bounded by recent clients.
    pub fn forget_idle(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }
}
