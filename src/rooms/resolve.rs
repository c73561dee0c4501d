//! State resolution v2 (spec: room versions 2+, "State resolution") for a room whose DAG has more
//! than one forward extremity: the states at the extremities are resolved with ruma's algorithm,
//! and the next event, which references every extremity, merges the branches.

use std::collections::{HashMap, HashSet};

use ruma::{
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{resolve, utils::event_id_set::EventIdSet, StateMap},
    OwnedEventId,
};

use super::pdu::{Pdu, PduRef};
use crate::{
    error::{Error, Result},
    storage::Storage,
};

/// Resolves the states of the given snapshots into one current state.
pub async fn resolve_snapshots(
    storage: &Storage,
    rules: &RoomVersionRules,
    snapshots: &[i64],
) -> Result<HashMap<(String, String), PduRef>> {
    let mut maps: Vec<StateMap<OwnedEventId>> = Vec::with_capacity(snapshots.len());
    for snapshot in snapshots {
        let entries = storage.state_snapshot(*snapshot).await?;
        maps.push(
            entries
                .into_iter()
                .filter_map(|(kind, key, id)| {
                    Some(((StateEventType::from(kind), key), OwnedEventId::try_from(id).ok()?))
                })
                .collect(),
        );
    }
    let mut auth_chains = Vec::with_capacity(maps.len());
    for map in &maps {
        let ids: Vec<&str> = map.values().map(|id| id.as_str()).collect();
        let chain = storage.auth_chain(&ids).await?;
        auth_chains.push(chain.into_iter().filter_map(|id| OwnedEventId::try_from(id).ok()).collect::<EventIdSet<_>>());
    }

    // Every event the algorithm may look at: the states and their auth chains.
    let mut wanted: HashSet<String> = maps.iter().flat_map(|m| m.values().map(|id| id.to_string())).collect();
    wanted.extend(auth_chains.iter().flat_map(|c| c.iter().map(|id| id.to_string())));
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let mut events: HashMap<OwnedEventId, PduRef> = HashMap::with_capacity(wanted.len());
    for row in storage.events(&wanted).await? {
        let pdu = Pdu::parse(&row.event_id, &row.pdu)?;
        events.insert(pdu.event_id.clone(), PduRef::new(pdu));
    }

    let v2 = rules.state_res.v2_rules().ok_or_else(|| Error::internal("room version without state resolution v2"))?;
    let resolved = resolve(&rules.authorization, v2, maps.iter(), auth_chains, |id| events.get(id).cloned(), |_| None)
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
    Ok(resolved
        .into_iter()
        .filter_map(|((kind, key), id)| Some(((kind.to_string(), key), events.get(&id)?.clone())))
        .collect())
}
