//! A scripted local HTTP service standing in for the external (HLR-style)
//! presence lookup: each request's head is reported, and answered as the
//! test says.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How the scripted service answers every request.
#[derive(Clone)]
pub enum Reply {
    /// This status and body.
    Answer(u16, String),
    /// Reads the request, then never answers (the connection stays open).
    Silent,
    /// 200 with a body far over the cap.
    Huge,
}

pub fn state(state: &str) -> Reply {
    Reply::Answer(200, format!(r#"{{"state":"{state}","operator":"x"}}"#))
}

/// A local HTTP service: each request's head is sent to `asked`.
pub struct Service {
    pub url: String,
    pub asked: mpsc::UnboundedReceiver<String>,
    count: Arc<AtomicUsize>,
}

impl Service {
    pub async fn start(reply: Reply) -> Self {
        Self::start_by(move |_| reply.clone()).await
    }

    /// A service whose answer depends on the request's head (its path and
    /// query: `number=…`).
    pub async fn start_by(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let reply = Arc::new(reply);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hlr?key=k1", listener.local_addr().unwrap());
        let (tx, asked) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (tx, reply, counted) = (tx.clone(), reply.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let answer = reply(&head);
                    let _ = tx.send(head);
                    let (status, body) = match answer {
                        Reply::Answer(status, body) => (status, body.into_bytes()),
                        Reply::Silent => {
                            // Hold the connection open, answer nothing.
                            tokio::time::sleep(Duration::from_secs(600)).await;
                            return;
                        }
                        Reply::Huge => (200, vec![b' '; 1 << 20]),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                });
            }
        });
        Self { url, asked, count }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
