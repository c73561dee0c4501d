//! Device management (spec: "Device management").

use ruma::{
    api::client::{
        device::{
            delete_device::v3 as delete_device, delete_devices::v3 as delete_devices, get_device::v3 as get_device,
            get_devices::v3 as get_devices, update_device::v3 as update_device, Device,
        },
        uiaa::AuthType,
    },
    MilliSecondsSinceUnixEpoch, UInt,
};

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
    storage::DeviceRow,
};

fn device(row: DeviceRow) -> Device {
    let mut device = Device::new(row.device_id.into());
    device.display_name = row.display_name;
    device.last_seen_ip = row.last_seen_ip;
    device.last_seen_ts = row.last_seen_ts.and_then(|ts| UInt::new(ts as u64)).map(MilliSecondsSinceUnixEpoch);
    device
}

pub async fn list(s: Services, req: Ruma<get_devices::Request>) -> Result<get_devices::Response> {
    let session = req.require_session()?;
    let devices = s.accounts.devices(&session.user_id).await?;
    Ok(get_devices::Response::new(devices.into_iter().map(device).collect()))
}

pub async fn get(s: Services, req: Ruma<get_device::Request>) -> Result<get_device::Response> {
    let session = req.require_session()?;
    let row = s.accounts.device(&session.user_id, req.body.device_id.as_str()).await?;
    let row = row.ok_or_else(|| Error::NotFound("no such device".into()))?;
    Ok(get_device::Response::new(device(row)))
}

pub async fn update(s: Services, req: Ruma<update_device::Request>) -> Result<update_device::Response> {
    let session = req.require_session()?;
    let device_id = req.body.device_id.as_str();
    let found = match &req.body.display_name {
        Some(name) => s.accounts.rename_device(&session.user_id, device_id, Some(name)).await?,
        // Without a display name nothing changes, but the device must still exist.
        None => s.accounts.device(&session.user_id, device_id).await?.is_some(),
    };
    if !found {
        return Err(Error::NotFound("no such device".into()));
    }
    Ok(update_device::Response::new())
}

pub async fn delete(s: Services, req: Ruma<delete_device::Request>) -> Result<delete_device::Response> {
    let session = req.require_session()?;
    s.accounts.authenticate_uia(&[vec![AuthType::Password]], req.body.auth.as_ref(), Some(&session.user_id)).await?;
    s.accounts.delete_devices(&session.user_id, &[req.body.device_id.as_str()]).await?;
    s.keys.devices_changed(&session.user_id).await?;
    Ok(delete_device::Response::new())
}

pub async fn delete_many(s: Services, req: Ruma<delete_devices::Request>) -> Result<delete_devices::Response> {
    let session = req.require_session()?;
    s.accounts.authenticate_uia(&[vec![AuthType::Password]], req.body.auth.as_ref(), Some(&session.user_id)).await?;
    let ids: Vec<&str> = req.body.devices.iter().map(|d| d.as_str()).collect();
    s.accounts.delete_devices(&session.user_id, &ids).await?;
    s.keys.devices_changed(&session.user_id).await?;
    Ok(delete_devices::Response::new())
}
