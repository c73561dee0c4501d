//! Typing notifications, receipts and read markers (spec: "Typing Notifications", "Receipts",
//! "Fully read markers"), and to-device messages (spec: "Send-to-Device messaging").

use ruma::api::client::{
    read_marker::set_read_marker::v3 as read_markers,
    receipt::create_receipt::v3::{self as receipt, ReceiptType},
    to_device::send_event_to_device::v3 as send_to_device,
    typing::create_typing_event::v3::{self as typing, Typing},
};
use ruma::events::receipt::ReceiptThread;

use crate::{
    error::{Error, Result},
    http::Ruma,
    services::Services,
};

pub async fn set_typing(s: Services, req: Ruma<typing::Request>) -> Result<typing::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    session.require_user(&b.user_id, "typing state")?;
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    s.sync.set_typing(&b.room_id, &session.user_id, timeout).await?;
    Ok(typing::Response::new())
}

pub async fn send_receipt(s: Services, req: Ruma<receipt::Request>) -> Result<receipt::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    let receipt_type = match b.receipt_type {
        ReceiptType::Read => "m.read",
        ReceiptType::ReadPrivate => "m.read.private",
        ReceiptType::FullyRead => "m.fully_read",
        _ => return Err(Error::InvalidParam("unknown receipt type".into())),
    };
    let thread = match &b.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(id) => Some(id.to_string()),
        _ => return Err(Error::InvalidParam("unknown thread_id".into())),
    };
    s.sync.set_receipt(&b.room_id, &session.user_id, receipt_type, &b.event_id, thread.as_deref()).await?;
    Ok(receipt::Response::new())
}

pub async fn set_read_markers(s: Services, req: Ruma<read_markers::Request>) -> Result<read_markers::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    for (kind, event) in
        [("m.fully_read", &b.fully_read), ("m.read", &b.read_receipt), ("m.read.private", &b.private_read_receipt)]
    {
        if let Some(event_id) = event {
            s.sync.set_receipt(&b.room_id, &session.user_id, kind, event_id, None).await?;
        }
    }
    Ok(read_markers::Response::new())
}

pub async fn to_device(s: Services, req: Ruma<send_to_device::Request>) -> Result<send_to_device::Response> {
    let session = req.require_session()?;
    let b = &req.body;
    let mut messages = Vec::new();
    for (user_id, devices) in &b.messages {
        for (device, content) in devices {
            let content = serde_json::from_str(content.json().get()).map_err(|e| Error::BadJson(e.to_string()))?;
            messages.push((user_id.clone(), device.to_string(), content));
        }
    }
    s.sync
        .send_to_device(
            &session.user_id,
            session.device_id.as_str(),
            b.txn_id.as_str(),
            &b.event_type.to_string(),
            messages,
        )
        .await?;
    Ok(send_to_device::Response::new())
}
