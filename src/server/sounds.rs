//! The prompts and tones the switch plays, installed as 8 kHz raw signed
//! linear files (`NAME.sln`) into the data directory at start, where the
//! switch reads them.

use std::path::Path;

use crate::engine::sounds as engine;

pub const INVALID: &str = "invalid";
pub const TOO_MANY: &str = "too-many";

const RATE: f64 = 8000.0;

/// (frequency Hz, milliseconds) steps; frequency 0 is silence.
fn tones(name: &str) -> &'static [(f64, u32)] {
    match name {
        engine::BEEP => &[(1000.0, 120)],
        engine::ACCEPTED => &[(660.0, 90), (0.0, 30), (880.0, 120)],
        engine::REJECTED => &[(480.0, 250), (0.0, 100), (360.0, 400)],
        engine::MENU => &[(700.0, 80), (0.0, 60), (700.0, 80)],
        engine::SAVED => &[(880.0, 80), (0.0, 40), (1100.0, 80)],
        engine::DELETED => &[(500.0, 80), (0.0, 40), (400.0, 80)],
        engine::TOO_LONG | TOO_MANY => &[
            (440.0, 150),
            (0.0, 80),
            (440.0, 150),
            (0.0, 80),
            (440.0, 150),
        ],
        engine::GOODBYE => &[(880.0, 80), (0.0, 40), (660.0, 120)],
        _ => &[(950.0, 330), (1400.0, 330), (1800.0, 330)],
    }
}

fn synthesise(steps: &[(f64, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(freq, ms) in steps {
        let n = (RATE * f64::from(ms) / 1000.0) as usize;
        for i in 0..n {
            // A 5 ms ramp at both ends: no clicks.
            let ramp = (i.min(n - 1 - i) as f64 / 40.0).min(1.0);
            let v = if freq == 0.0 {
                0.0
            } else {
                (2.0 * std::f64::consts::PI * freq * i as f64 / RATE).sin() * 8000.0 * ramp
            };
            out.extend_from_slice(&(v as i16).to_le_bytes());
        }
    }
    out
}

/// Write every sound into `dir` (replacing older versions).
pub fn install(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in [
        engine::BEEP,
        engine::ACCEPTED,
        engine::REJECTED,
        engine::MENU,
        engine::SAVED,
        engine::DELETED,
        engine::TOO_LONG,
        engine::GOODBYE,
        INVALID,
        TOO_MANY,
    ] {
        std::fs::write(dir.join(format!("{name}.sln")), synthesise(tones(name)))?;
    }
    Ok(())
}
