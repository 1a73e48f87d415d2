//! The AudioSocket media server: hostile peers on loopback (no Asterisk),
//! and a whole message relayed live between two real phones on the test
//! Asterisk 22.10.1.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use ivm::media::analysis::align;
use ivm::media::signal::{SignalConfig, speech_like};
use ivm::proto::audiosocket::{self, MAX_PAYLOAD, Message, Uuid};
use ivm::switch::asterisk::audiosocket::{
    MediaCommand, MediaEnd, MediaEvent, MediaHandle, MediaServer, MediaServerConfig, SharedLog,
};
use ivm_testbed::{
    AMI_SECRET, AMI_USER, Asterisk, AsteriskOptions, Phone, free_tcp_port, write_wav,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[path = "support/tmpfs.rs"]
mod tmpfs;

async fn server(config: MediaServerConfig) -> (MediaServer, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, shutdown) = watch::channel(false);
    (
        MediaServer::start(listener, config, shutdown).unwrap(),
        stop,
    )
}

async fn connect(server: &MediaServer, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(first).await.unwrap();
    stream
}

fn uuid_message(uuid: Uuid) -> Vec<u8> {
    audiosocket::encode_as_peer(&Message::Uuid(uuid))
        .unwrap()
        .to_vec()
}

fn frame(value: i16) -> Vec<u8> {
    audiosocket::encode_audio(8_000, &[value; 160])
        .unwrap()
        .to_vec()
}

/// Read until the server closes the connection (what it sent is ignored).
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn next_event(handle: &mut MediaHandle) -> MediaEvent {
    tokio::time::timeout(Duration::from_secs(5), handle.events.recv())
        .await
        .expect("an event in time")
        .expect("the connection reports")
}

#[tokio::test]
async fn hostile_peers_are_dropped_and_a_good_talker_is_untouched() {
    let (server, _stop) = server(MediaServerConfig {
        partial_message_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(500),
        ..MediaServerConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // A good talker, first: it keeps sending while the others misbehave.
    let good_log = SharedLog::new(8_000);
    let mut good = server.expect_talker(good_log.clone(), dir.path().join("good.sln"));
    let mut good_stream = connect(&server, &uuid_message(good.uuid)).await;
    assert_eq!(next_event(&mut good).await, MediaEvent::Connected);
    good_stream.write_all(&frame(100)).await.unwrap();

    // Unknown UUID, a first message that is not a UUID, nothing at all.
    let mut unknown = connect(&server, &uuid_message(Uuid([9; 16]))).await;
    assert!(closed_by_server(&mut unknown, Duration::from_secs(3)).await);
    let mut audio_first = connect(&server, &frame(1)).await;
    assert!(closed_by_server(&mut audio_first, Duration::from_secs(3)).await);
    let mut silent = connect(&server, &[]).await;
    assert!(closed_by_server(&mut silent, Duration::from_secs(3)).await);
    // A UUID is good once only: the good talker's, replayed, is refused.
    let mut replay = connect(&server, &uuid_message(good.uuid)).await;
    assert!(closed_by_server(&mut replay, Duration::from_secs(3)).await);

    // Expected talkers that then misbehave: each ends with what it sent kept.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong kind", vec![0x02, 0x00, 0x00]),
        ("uuid again", uuid_message(Uuid([1; 16]))),
        ("odd audio length", vec![0x10, 0x00, 0x03, 1, 2, 3]),
        (
            "short frame left unfinished",
            vec![0x10, 0x01, 0x40, 1, 2, 3],
        ),
        ("oversized", vec![0x10, 0xff, 0xfe]),
        (
            "flood",
            std::iter::repeat_n(frame(7), 500).flatten().collect(),
        ),
    ];
    for (name, bad) in cases {
        let log = SharedLog::new(8_000);
        let path = dir.path().join(format!("{}.sln", name.replace(' ', "_")));
        let mut handle = server.expect_talker(log.clone(), path.clone());
        let mut stream = connect(&server, &uuid_message(handle.uuid)).await;
        assert_eq!(
            next_event(&mut handle).await,
            MediaEvent::Connected,
            "{name}"
        );
        stream.write_all(&frame(5)).await.unwrap();
        stream.write_all(&frame(6)).await.unwrap();
        let _ = stream.write_all(&bad).await;
        assert!(
            closed_by_server(&mut stream, Duration::from_secs(3)).await,
            "{name}"
        );
        match next_event(&mut handle).await {
            MediaEvent::TalkerEnded {
                end: MediaEnd::Protocol(reason),
                stored_samples,
            } => {
                // The flood is cut once over the limit: what came before
                // the cut is kept too.
                let kept = if name == "flood" {
                    320..200_000
                } else {
                    320..321
                };
                assert!(kept.contains(&stored_samples), "{name}: {stored_samples}");
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(bytes.len() as u64, stored_samples * 2, "{name}");
                assert!(bytes[..320].chunks(2).all(|p| p == 5i16.to_le_bytes()));
                assert!(log.with(|l| l.is_closed()), "{name}");
                eprintln!("{name}: {reason}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }

    // The good talker never noticed: more audio, then the caller hangs up.
    good_stream.write_all(&frame(200)).await.unwrap();
    good_stream
        .write_all(&audiosocket::encode_as_peer(&Message::Dtmf('#')).unwrap())
        .await
        .unwrap();
    assert_eq!(next_event(&mut good).await, MediaEvent::Dtmf('#'));
    // Like Asterisk on hang-up: a FIN (dropping a socket with our unread
    // silence frames in it would be a reset instead).
    good_stream.shutdown().await.unwrap();
    assert_eq!(
        next_event(&mut good).await,
        MediaEvent::TalkerEnded {
            end: MediaEnd::PeerClosed,
            stored_samples: 320
        }
    );
    let stored = std::fs::read(dir.path().join("good.sln")).unwrap();
    let expected: Vec<u8> = [100i16; 160]
        .iter()
        .chain([200i16; 160].iter())
        .flat_map(|s| s.to_le_bytes())
        .collect();
    assert_eq!(stored, expected, "stored exactly as sent");
    assert_eq!(good_log.with(|l| l.samples().len()), 320);
}

#[tokio::test]
async fn a_listener_gets_paced_frames_a_prompt_and_a_final_hangup() {
    let (server, _stop) = server(MediaServerConfig::default()).await;
    let log = SharedLog::new(8_000);
    log.with(|l| {
        l.append(&[300; 160 * 10]);
        l.close();
    });
    let mut handle = server.expect_listener(log);
    let mut stream = connect(&server, &uuid_message(handle.uuid)).await;
    assert_eq!(next_event(&mut handle).await, MediaEvent::Connected);
    handle
        .commands
        .send(MediaCommand::Play(vec![-5; 320]))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    let hung_up = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("frames keep coming")
            .unwrap();
        assert!(n > 0, "closed without a hang-up message");
        buf.extend_from_slice(&chunk[..n]);
        let mut done = false;
        while let Some(message) = audiosocket::decode(&mut buf, MAX_PAYLOAD).unwrap() {
            match message {
                Message::Audio { samples, .. } => frames.push(samples),
                Message::Hangup => done = true,
                other => panic!("{other:?}"),
            }
        }
        if done {
            break true;
        }
    };
    assert!(hung_up);
    assert!(frames.iter().all(|f| f.len() == 160));
    // The prompt may start before or after the first frame was due; the
    // message is whole, in order, after it.
    let prompt_at = frames.iter().position(|f| f[0] == -5).unwrap();
    assert_eq!(frames[prompt_at + 1][0], -5);
    let message: Vec<_> = frames.iter().filter(|f| f[0] == 300).collect();
    assert_eq!(message.len(), 10);
    assert!(frames.iter().all(|f| [0, 300, -5].contains(&f[0])));
    match next_event(&mut handle).await {
        MediaEvent::ListenerEnded {
            end: MediaEnd::Finished,
            heard_position,
            stats,
        } => {
            assert_eq!(heard_position, 1_600);
            assert_eq!(stats.frames_sent as usize, frames.len());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expected_connection_that_never_comes_is_forgotten() {
    let (server, _stop) = server(MediaServerConfig {
        connect_timeout: Duration::from_millis(200),
        ..MediaServerConfig::default()
    })
    .await;
    let mut handle = server.expect_listener(SharedLog::new(8_000));
    assert_eq!(next_event(&mut handle).await, MediaEvent::NeverConnected);
    let mut late = connect(&server, &uuid_message(handle.uuid)).await;
    assert!(closed_by_server(&mut late, Duration::from_secs(3)).await);
    // One that came in time is not reported.
    let mut on_time = server.expect_listener(SharedLog::new(8_000));
    let _stream = connect(&server, &uuid_message(on_time.uuid)).await;
    assert_eq!(next_event(&mut on_time).await, MediaEvent::Connected);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(on_time.events.try_recv().is_err(), "no NeverConnected");
}

/// The caller's leg hears silence, a prompt (the beep) in the same paced
/// stream, and after `Finish` the rest of the prompt, then `00 00 00`.
#[tokio::test]
async fn a_talker_hears_prompts_in_its_stream_and_finish_waits_for_them() {
    let (server, _stop) = server(MediaServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::new(8_000);
    let mut handle = server.expect_talker(log.clone(), dir.path().join("m.sln"));
    let mut stream = connect(&server, &uuid_message(handle.uuid)).await;
    assert_eq!(next_event(&mut handle).await, MediaEvent::Connected);
    let beep: Vec<i16> = (0..800)
        .map(|n| if n % 8 < 4 { 4_000 } else { -4_000 })
        .collect();
    handle
        .commands
        .send(MediaCommand::Play(beep.clone()))
        .unwrap();
    handle.commands.send(MediaCommand::Finish).unwrap();
    let mut buf = BytesMut::new();
    let mut heard: Vec<i16> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("frames keep coming")
            .unwrap();
        assert!(n > 0, "closed without a hang-up message");
        buf.extend_from_slice(&chunk[..n]);
        let mut done = false;
        while let Some(message) = audiosocket::decode(&mut buf, MAX_PAYLOAD).unwrap() {
            match message {
                Message::Audio { samples, .. } => {
                    assert_eq!(samples.len(), 160);
                    heard.extend(samples);
                }
                Message::Hangup => done = true,
                other => panic!("{other:?}"),
            }
        }
        if done {
            break;
        }
    }
    let start = heard.iter().position(|&s| s != 0).expect("the beep");
    assert_eq!(start % 160, 0, "the beep starts a frame");
    assert_eq!(&heard[start..start + 800], &beep[..]);
    assert!(
        heard[start + 800..].iter().all(|&s| s == 0),
        "then the padding"
    );
    assert_eq!(heard.len(), start + 800, "hang-up right after the beep");
    assert_eq!(
        next_event(&mut handle).await,
        MediaEvent::TalkerEnded {
            end: MediaEnd::Finished,
            stored_samples: 0
        }
    );
    assert!(log.with(|l| l.is_closed()));
}

/// A listener resuming at 1 s hears the message from there, and reports
/// how far it got.
#[tokio::test]
async fn a_listener_can_resume_from_a_position() {
    let (server, _stop) = server(MediaServerConfig::default()).await;
    let log = SharedLog::new(8_000);
    log.with(|l| {
        for n in 0..100i16 {
            // Loud enough to be speech: a pause would be shortened.
            l.append(&[1_000 + n; 160]);
        }
        l.close();
    });
    let mut handle = server.expect_listener_from(log, 8_000);
    let mut stream = connect(&server, &uuid_message(handle.uuid)).await;
    assert_eq!(next_event(&mut handle).await, MediaEvent::Connected);
    let mut buf = BytesMut::new();
    let mut firsts = Vec::new();
    let mut chunk = [0u8; 4096];
    'read: loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("frames keep coming")
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        while let Some(message) = audiosocket::decode(&mut buf, MAX_PAYLOAD).unwrap() {
            match message {
                Message::Audio { samples, .. } => firsts.push(samples[0]),
                Message::Hangup => break 'read,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(firsts, (1_050..1_100).collect::<Vec<i16>>());
    match next_event(&mut handle).await {
        MediaEvent::ListenerEnded { heard_position, .. } => assert_eq!(heard_position, 16_000),
        other => panic!("{other:?}"),
    }
}

/// AMI `Originate` of a phone into `AudioSocket(uuid,addr)`.
async fn originate(asterisk: &Asterisk, phone: &str, uuid: Uuid, port: u16) -> TcpStream {
    let mut ami = TcpStream::connect(asterisk.ami_address()).await.unwrap();
    // The testbed's AMI user (tests/asterisk/conf/manager.conf).
    let action = format!(
        "Action: Login\r\nUsername: {AMI_USER}\r\nSecret: {AMI_SECRET}\r\n\r\n\
         Action: Originate\r\nActionID: o1\r\nChannel: PJSIP/{phone}\r\n\
         Application: AudioSocket\r\nData: {uuid},127.0.0.1:{port}\r\nAsync: true\r\n\r\n",
    );
    ami.write_all(action.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains("ActionID: o1") {
        let n = tokio::time::timeout(Duration::from_secs(5), ami.read(&mut chunk))
            .await
            .expect("ami answers")
            .unwrap();
        assert!(n > 0, "ami closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(!seen.contains("Response: Error"), "{seen}");
    ami
}

fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

/// The caller's phone talks into ivm; a second phone, connected 2 s later,
/// hears the whole message in order (catch-up, then live) through ivm's
/// paced stream, and the stored message is what the caller's leg carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_stored_and_heard_whole_through_the_media_server() {
    let asterisk = Asterisk::start(AsteriskOptions {
        agi_port: free_tcp_port().unwrap(),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signal = speech_like(&SignalConfig {
        duration_ms: 8_000,
        lead_in_ms: 300,
        ..SignalConfig::default()
    });
    let mut said = signal.samples.clone();
    // baresip hangs up when its file ends; a little silence lets the tail
    // through first.
    said.extend(std::iter::repeat_n(0, 4_000));
    let said_wav = dir.path().join("said.wav");
    write_wav(&said_wav, &said).unwrap();
    let mut caller = Phone::start(&asterisk, "1001", Some(&said_wav))
        .await
        .unwrap();
    let mut target = Phone::start(&asterisk, "1002", None).await.unwrap();
    let (server, _stop) = server(MediaServerConfig::default()).await;
    let port = server.local_addr().port();

    let log = SharedLog::new(8_000);
    let stored_path = dir.path().join("message.sln");
    let mut talker = server.expect_talker(log.clone(), stored_path.clone());
    let _ami_caller = originate(&asterisk, "1001", talker.uuid, port).await;
    assert_eq!(next_event(&mut talker).await, MediaEvent::Connected);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut listener = server.expect_listener(log.clone());
    let _ami_target = originate(&asterisk, "1002", listener.uuid, port).await;
    assert_eq!(next_event(&mut listener).await, MediaEvent::Connected);
    // The listener's keys come in on its own leg (the duplex key, the menu).
    target.press('1').await.unwrap();
    assert_eq!(next_event(&mut listener).await, MediaEvent::Dtmf('1'));

    let talker_end = tokio::time::timeout(Duration::from_secs(30), talker.events.recv())
        .await
        .expect("the caller's file ends")
        .unwrap();
    let MediaEvent::TalkerEnded {
        end,
        stored_samples,
    } = talker_end
    else {
        panic!("{talker_end:?}");
    };
    assert_eq!(end, MediaEnd::PeerClosed);
    let listener_end = tokio::time::timeout(Duration::from_secs(30), listener.events.recv())
        .await
        .expect("the listener plays out")
        .unwrap();
    let MediaEvent::ListenerEnded {
        end,
        heard_position,
        stats,
    } = listener_end
    else {
        panic!("{listener_end:?}");
    };
    assert_eq!(end, MediaEnd::Finished);
    assert_eq!(heard_position, stored_samples);
    target
        .wait_call("CALL_CLOSED", Duration::from_secs(5))
        .await
        .unwrap();
    let _ = caller.hangup().await;

    // Stored: exactly the frames the caller's leg delivered, and they are
    // the whole message, in order.
    let stored = read_raw(&stored_path);
    assert_eq!(stored.len() as u64, stored_samples);
    assert_eq!(log.with(|l| l.samples().to_vec()), stored);
    let kept = align(&signal.samples, &stored, 8_000);
    assert_eq!(kept.gap_ms_total, 0.0, "{:?}", kept.gaps);
    assert_eq!(kept.repeat_ms_total, 0.0, "{:?}", kept.repeats);
    assert!(kept.first_source_ms.unwrap_or(f64::MAX) <= 20.0);

    // Heard by the second phone: everything once, nothing clipped.
    let heard = ivm_testbed::scenario::read_heard(&target.heard_wav())
        .unwrap()
        .1;
    let alignment = align(&signal.samples, &heard, 8_000);
    assert_eq!(alignment.gap_ms_total, 0.0, "gaps {:?}", alignment.gaps);
    assert_eq!(
        alignment.repeat_ms_total, 0.0,
        "repeats {:?}",
        alignment.repeats
    );
    assert!(alignment.first_source_ms.unwrap_or(f64::MAX) <= 20.0);
    assert!(
        alignment.last_source_ms.unwrap_or(0.0) + 20.0 >= kept.last_source_ms.unwrap_or(0.0),
        "the end was heard"
    );
    let mut lateness = stats.lateness_us.clone();
    lateness.sort_unstable();
    println!(
        "frames sent {}, skipped ticks {}, underruns {}, live at frame {:?}, send lateness p50 {} us p99 {} us",
        stats.frames_sent,
        stats.skipped_ticks,
        stats.underruns,
        stats.live_at_frame,
        lateness.get(lateness.len() / 2).copied().unwrap_or(0),
        lateness
            .get(lateness.len() * 99 / 100)
            .copied()
            .unwrap_or(0),
    );
}

/// The message file's disk fills up while the caller talks: the session
/// hears `StoreFailed` at once with what was synced, the stream goes on
/// (its frames still reach the log) until the session finishes it.
#[tokio::test]
async fn a_full_disk_is_reported_at_once_and_the_stream_goes_on() {
    let Some((_tmpfs, dir)) = tmpfs::Tmpfs::mount(256 * 1024) else {
        return;
    };
    let (server, _stop) = server(MediaServerConfig {
        sync_interval: Duration::from_millis(20),
        ..MediaServerConfig::default()
    })
    .await;
    let path = dir.path().join("message.sln");
    let log = SharedLog::new(8_000);
    let mut handle = server.expect_talker(log.clone(), path.clone());
    let mut stream = connect(&server, &uuid_message(handle.uuid)).await;
    assert_eq!(next_event(&mut handle).await, MediaEvent::Connected);
    // Half a second is stored...
    for _ in 0..25 {
        stream.write_all(&frame(100)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 8_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "half a second stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...then the disk is full.
    let (_filler_path, _filler) = tmpfs::fill(dir.path(), "filler");
    for _ in 0..25 {
        stream.write_all(&frame(200)).await.unwrap();
    }
    match next_event(&mut handle).await {
        MediaEvent::StoreFailed { stored_samples, .. } => {
            assert!((4_000..8_000).contains(&stored_samples), "{stored_samples}");
        }
        other => panic!("expected StoreFailed, got {other:?}"),
    }
    // The stream is still up: more frames reach the log.
    for _ in 0..5 {
        stream.write_all(&frame(300)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while log.with(|l| l.len()) < 55 * 160 {
        assert!(tokio::time::Instant::now() < deadline, "the log grows on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.commands.send(MediaCommand::Finish).unwrap();
    assert!(closed_by_server(&mut stream, Duration::from_secs(3)).await);
    assert!(matches!(
        next_event(&mut handle).await,
        MediaEvent::TalkerEnded { .. }
    ));
}
