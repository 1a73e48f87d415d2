//! Fuzz the dial-string parser (the number plan, S1): any string, under the
//! default plan and one that allows external numbers, must never panic; a
//! string over the length cap is refused unread; an accepted external
//! number always matches a configured pattern.
#![no_main]

use ivm::config::NumberingConfig;
use ivm::numbering::{DialError, MAX_DIAL_LEN, NumberPlan, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let plans = [
        NumberPlan::new(NumberingConfig::default()),
        NumberPlan::new(NumberingConfig {
            external_targets: vec!["0049X.".into(), "NXXNXXXXXX".into()],
            extension_max_digits: 4,
            ..NumberingConfig::default()
        }),
    ];
    for plan in &plans {
        let result = plan.parse(&text);
        if text.len() > MAX_DIAL_LEN {
            assert_eq!(result, Err(DialError::TooLong));
        }
        if let Ok(dialed) = result {
            for target in &dialed.targets {
                if let Target::Number(n) = target {
                    assert!(
                        plan.config()
                            .external_targets
                            .iter()
                            .any(|p| ivm::switch::peer::pattern_matches(p, n)),
                        "{n} accepted without a pattern"
                    );
                }
            }
        }
    }
});
