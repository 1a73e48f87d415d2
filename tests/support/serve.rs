//! `ivm serve` in-process on a [`fake_switch`](super::fake_switch): start it
//! on a data dir with a config of the test's choosing, read back what it
//! stored, stop it, start another on the same data dir (a restart).

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use ivm::config::Config;
use ivm::media::signal::{SignalConfig, speech_like};
use ivm::server::Ready;
use ivm::store::{MessageRow, NewUser, Store};
use tokio::sync::watch;

use super::fake_switch::{self, CAPTURE_RATE, Script};

pub struct Server {
    pub dir: std::sync::Arc<tempfile::TempDir>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ivm::server::ServerError>>,
}

impl Server {
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn messages(&self, to: &str) -> Vec<MessageRow> {
        Store::open(self.data_dir())
            .unwrap()
            .list_messages(Some(to))
            .unwrap()
    }

    /// Wait until the messages to `to` satisfy `done`; fails the test
    /// after a deadline.
    pub async fn wait_messages(
        &self,
        to: &str,
        what: &str,
        done: impl Fn(&[MessageRow]) -> bool,
    ) -> Vec<MessageRow> {
        let deadline = tokio::time::Instant::now() + fake_switch::WAIT;
        loop {
            let rows = self.messages(to);
            if done(&rows) {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the store holds {rows:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tell the server to stop; it winds down while the test goes on.
    pub fn begin_stop(self) -> Stopping {
        let _ = self.stop.send(true);
        Stopping {
            dir: self.dir,
            task: self.task,
        }
    }

    /// Stop the server and wait for it; returns its data dir.
    pub async fn stop(self) -> std::sync::Arc<tempfile::TempDir> {
        let _ = self.stop.send(true);
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops on shutdown");
        result.unwrap().unwrap();
        self.dir
    }
}

/// A server told to stop.
pub struct Stopping {
    dir: std::sync::Arc<tempfile::TempDir>,
    task: tokio::task::JoinHandle<Result<(), ivm::server::ServerError>>,
}

impl Stopping {
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Wait for the server to return (successfully); returns its data dir.
    pub async fn finish(self) -> std::sync::Arc<tempfile::TempDir> {
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops");
        result.unwrap().unwrap();
        self.dir
    }
}

/// A user to add before the server starts: extension, name, PIN.
pub type User<'a> = (&'a str, &'a str, Option<&'a str>);

/// A fresh data dir holding `users`.
pub fn data_dir(users: &[User]) -> std::sync::Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    for (extension, name, pin) in users {
        store
            .add_user(&NewUser {
                extension,
                name,
                mobile: None,
                pin: *pin,
            })
            .unwrap();
    }
    std::sync::Arc::new(dir)
}

/// Start a server on `dir` with the default config changed by `configure`.
pub async fn start(
    dir: std::sync::Arc<tempfile::TempDir>,
    configure: impl FnOnce(&mut Config),
) -> (Script, Server) {
    start_with_clock(dir, configure, ivm::server::LocalClock::system()).await
}

/// [`start`] with the server's local time of day taken from `clock`.
pub async fn start_with_clock(
    dir: std::sync::Arc<tempfile::TempDir>,
    configure: impl FnOnce(&mut Config),
    clock: ivm::server::LocalClock,
) -> (Script, Server) {
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    configure(&mut config);
    let script = fake_switch::fake_switch();
    let (stop, stopped) = watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let switch: std::sync::Arc<dyn ivm::switch::Switch> = script.switch.clone();
    let task = tokio::spawn(ivm::server::serve_with_clock(
        config,
        vec![switch],
        Ready {
            agi_address: None,
            outbound_address: None,
        },
        stopped,
        Some(ready_tx),
        clock,
    ));
    tokio::time::timeout(Duration::from_secs(5), ready_rx)
        .await
        .expect("the server is ready")
        .expect("the server did not fail");
    (script, Server { dir, stop, task })
}

/// `ms` of speech at the capture rate.
pub fn speech(ms: u32, seed: u64) -> Vec<i16> {
    speech_like(&SignalConfig {
        sample_rate: CAPTURE_RATE,
        duration_ms: ms,
        seed,
        ..SignalConfig::default()
    })
    .samples
}

/// Key `digits` on `call`, one by one.
pub fn keys(script: &Script, call: &ivm::switch::CallId, digits: &str) {
    for digit in digits.chars() {
        script.press(call, digit);
    }
}
