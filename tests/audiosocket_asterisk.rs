//! AudioSocket on the real test Asterisk (22.10.1): what the app really
//! sends and accepts. A phone is originated into `AudioSocket(uuid,
//! 127.0.0.1:port)`; this test plays the AudioSocket server with the
//! `proto::audiosocket` codec. The measured facts are in
//! `tests/asterisk/NOTES.md`; timing figures are printed, not asserted.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ivm::media::signal::{SignalConfig, speech_like};
use ivm::proto::audiosocket::{self, MAX_PAYLOAD, Message, Uuid};
use ivm_testbed::{Asterisk, AsteriskOptions, Phone, free_tcp_port, write_wav};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn random_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = (nanos >> ((index % 12) * 8)) as u8 ^ (index as u8).wrapping_mul(37);
    }
    Uuid::v4_from_bytes(bytes)
}

/// AMI `Originate` of phone 1001 into `AudioSocket(uuid,127.0.0.1:port)`,
/// as ivm would ring a listener; waits for the action's response.
async fn originate(asterisk: &Asterisk, uuid: Uuid, port: u16) -> TcpStream {
    let mut ami = TcpStream::connect(asterisk.ami_address()).await.unwrap();
    let action = format!(
        // The testbed's AMI user (tests/asterisk/conf/manager.conf).
        "Action: Login\r\nUsername: ivm\r\nSecret: {secret}\r\n\r\n\
         Action: Originate\r\nActionID: o1\r\nChannel: PJSIP/1001\r\n\
         Application: AudioSocket\r\nData: {uuid},127.0.0.1:{port}\r\nAsync: true\r\n\r\n",
        secret = ivm_testbed::AMI_SECRET,
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

struct Received {
    at: Instant,
    message: Message,
}

/// Read messages until EOF or `until`, all timestamped.
async fn read_all(
    mut read: tokio::net::tcp::OwnedReadHalf,
    until: Instant,
) -> (Vec<Received>, Option<Instant>, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut raw_start = Vec::new();
    let mut eof = None;
    loop {
        let deadline = tokio::time::Instant::from_std(until);
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                eof = Some(Instant::now());
                break;
            }
            Ok(Ok(n)) => {
                if raw_start.len() < 400 {
                    raw_start.extend_from_slice(&chunk[..n.min(400 - raw_start.len())]);
                }
                buf.extend_from_slice(&chunk[..n]);
                let at = Instant::now();
                while let Some(message) =
                    audiosocket::decode(&mut buf, MAX_PAYLOAD).expect("asterisk speaks audiosocket")
                {
                    out.push(Received { at, message });
                }
            }
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => break,
        }
    }
    (out, eof, raw_start)
}

/// Send a 20 ms frame of a 1 kHz tone every 20 ms until `stop`.
async fn send_tone(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (tokio::net::tcp::OwnedWriteHalf, u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    loop {
        ticker.tick().await;
        if *stop.borrow() {
            break;
        }
        let frame: Vec<i16> = (0..160)
            .map(|n| {
                let t = (sent * 160 + n) as f64 / 8000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
            })
            .collect();
        let bytes = audiosocket::encode_audio(8_000, &frame).expect("a valid frame");
        if write.write_all(&bytes).await.is_err() {
            break;
        }
        sent += 1;
    }
    (write, sent)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[((values.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audiosocket_app_streams_20ms_slin_frames_dtmf_and_closes_on_hangup() {
    let asterisk = Asterisk::start(AsteriskOptions {
        agi_port: free_tcp_port().unwrap(),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_like(&SignalConfig {
        duration_ms: 20_000,
        ..SignalConfig::default()
    });
    let speech_wav = dir.path().join("speech.wav");
    write_wav(&speech_wav, &speech.samples).unwrap();
    let mut phone = Phone::start(&asterisk, "1001", Some(&speech_wav))
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uuid = random_uuid();
    let originated = Instant::now();
    let _ami = originate(&asterisk, uuid, port).await;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap_or_else(|_| panic!("no connection; {}", asterisk.log_tail(20)))
        .unwrap();
    let connected = Instant::now();
    stream.set_nodelay(true).unwrap();
    let (read, write) = stream.into_split();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(send_tone(write, stop_rx));
    let reader = tokio::spawn(read_all(read, Instant::now() + Duration::from_secs(15)));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pressed = Instant::now();
    phone.press('5').await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let hung_up = Instant::now();
    phone.hangup().await.unwrap();
    let (messages, eof, raw) = reader.await.unwrap();
    stop_tx.send(true).unwrap();
    let (_, sent) = sender.await.unwrap();

    // The UUID first, exactly ours, in its 16-byte form.
    assert_eq!(messages[0].message, Message::Uuid(uuid), "raw: {raw:02x?}");
    assert_eq!(&raw[..3], &[0x01, 0x00, 0x10]);
    let mut sizes = std::collections::BTreeMap::new();
    let mut audio_times = Vec::new();
    let mut dtmf = Vec::new();
    for received in &messages[1..] {
        match &received.message {
            Message::Audio {
                sample_rate,
                samples,
            } => {
                *sizes.entry((*sample_rate, samples.len())).or_insert(0) += 1;
                audio_times.push(received.at);
            }
            Message::Dtmf(key) => dtmf.push((*key, received.at)),
            other => panic!("unexpected from asterisk: {other:?}"),
        }
    }
    assert_eq!(
        sizes.keys().copied().collect::<Vec<_>>(),
        vec![(8_000, 160)],
        "only 20 ms slin frames"
    );
    assert_eq!(dtmf.len(), 1, "{dtmf:?}");
    assert_eq!(dtmf[0].0, '5');
    let eof = eof.expect("asterisk closes the socket on hang-up");
    let gaps: Vec<f64> = audio_times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let heard = ivm_testbed::scenario::read_heard(&phone.heard_wav())
        .map(|(_, s)| s)
        .unwrap_or_default();
    let tone_rms = {
        let middle = &heard[heard.len() / 4..heard.len() * 3 / 4];
        (middle.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / middle.len().max(1) as f64)
            .sqrt()
    };
    println!("originate -> connect: {:?}", connected - originated);
    println!(
        "first audio after connect: {:?}",
        audio_times.first().map(|t| *t - connected)
    );
    println!(
        "audio frames: {} ({sizes:?}); inter-arrival ms p50 {:.1} p99 {:.1} max {:.1}",
        audio_times.len(),
        percentile(gaps.clone(), 0.5),
        percentile(gaps.clone(), 0.99),
        percentile(gaps, 1.0)
    );
    println!("dtmf '5' after press: {:?}", dtmf[0].1 - pressed);
    for pair in audio_times.windows(2) {
        if pair[1] - pair[0] > Duration::from_millis(60) {
            println!(
                "audio gap {:?} from {:?} after the press",
                pair[1] - pair[0],
                pair[0].checked_duration_since(pressed)
            );
        }
    }
    println!("eof after phone hang-up: {:?}", eof - hung_up);
    println!(
        "tone frames sent: {sent}; phone heard {} samples, rms {tone_rms:.0}",
        heard.len()
    );
    println!("first bytes: {:02x?}", &raw[..raw.len().min(30)]);
    assert!(tone_rms > 2_000.0, "the phone heard our paced frames");
}

/// Our `00 00 00` ends `AudioSocket()` with the channel still up: the
/// dialplan goes on (here: the originated channel has nothing more to do
/// and hangs up, which the phone sees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_message_from_us_ends_the_app_and_the_socket() {
    let asterisk = Asterisk::start(AsteriskOptions {
        agi_port: free_tcp_port().unwrap(),
    })
    .unwrap();
    let mut phone = Phone::start(&asterisk, "1001", None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uuid = random_uuid();
    let _ami = originate(&asterisk, uuid, port).await;
    let (mut stream, _): (TcpStream, _) =
        tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = BytesMut::new();
    let mut first = None;
    while first.is_none() {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        first = audiosocket::decode(&mut buf, MAX_PAYLOAD).unwrap();
    }
    assert_eq!(first, Some(Message::Uuid(uuid)));
    stream
        .write_all(&audiosocket::encode_hangup())
        .await
        .unwrap();
    let sent = Instant::now();
    let mut chunk = [0u8; 4096];
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("asterisk closes after our hang-up message");
    phone
        .wait_call("CALL_CLOSED", Duration::from_secs(5))
        .await
        .unwrap();
    println!("eof after our 00 00 00: {:?}", eof - sent);
}
