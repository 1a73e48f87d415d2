//! The prompts and tones the switch plays: the files of `sounds/` (8 kHz raw
//! signed linear, `NAME.sln`), built into the binary and installed into the
//! data directory at start, where the switch reads them.

use std::path::Path;

/// Every sound, by the name the engine and the server play it by.
const SOUNDS: &[(&str, &[u8])] = &[
    ("beep", include_bytes!("../../sounds/beep.sln")),
    ("accepted", include_bytes!("../../sounds/accepted.sln")),
    ("rejected", include_bytes!("../../sounds/rejected.sln")),
    ("error", include_bytes!("../../sounds/error.sln")),
    ("busy", include_bytes!("../../sounds/busy.sln")),
    (
        "message-from",
        include_bytes!("../../sounds/message-from.sln"),
    ),
    (
        "message-delivered",
        include_bytes!("../../sounds/message-delivered.sln"),
    ),
    (
        "not-answered-stored",
        include_bytes!("../../sounds/not-answered-stored.sln"),
    ),
    (
        "listener-menu",
        include_bytes!("../../sounds/listener-menu.sln"),
    ),
    (
        "message-saved",
        include_bytes!("../../sounds/message-saved.sln"),
    ),
    (
        "message-deleted",
        include_bytes!("../../sounds/message-deleted.sln"),
    ),
    (
        "no-messages",
        include_bytes!("../../sounds/no-messages.sln"),
    ),
    (
        "invalid-number",
        include_bytes!("../../sounds/invalid-number.sln"),
    ),
    (
        "message-too-long",
        include_bytes!("../../sounds/message-too-long.sln"),
    ),
    (
        "too-many-messages",
        include_bytes!("../../sounds/too-many-messages.sln"),
    ),
    ("try-later", include_bytes!("../../sounds/try-later.sln")),
    (
        "not-recorded",
        include_bytes!("../../sounds/not-recorded.sln"),
    ),
    ("goodbye", include_bytes!("../../sounds/goodbye.sln")),
    (
        "not-available-stored",
        include_bytes!("../../sounds/not-available-stored.sln"),
    ),
    (
        "busy-stored",
        include_bytes!("../../sounds/busy-stored.sln"),
    ),
    ("dnd-stored", include_bytes!("../../sounds/dnd-stored.sln")),
    ("dnd-on", include_bytes!("../../sounds/dnd-on.sln")),
    ("away-on", include_bytes!("../../sounds/away-on.sln")),
    ("available", include_bytes!("../../sounds/available.sln")),
    (
        "groups-not-enabled",
        include_bytes!("../../sounds/groups-not-enabled.sln"),
    ),
    (
        "new-messages",
        include_bytes!("../../sounds/new-messages.sln"),
    ), // The intro of a retrieved message (`engine::intro`).
    ("n-0", include_bytes!("../../sounds/n-0.sln")),
    ("n-1", include_bytes!("../../sounds/n-1.sln")),
    ("n-2", include_bytes!("../../sounds/n-2.sln")),
    ("n-3", include_bytes!("../../sounds/n-3.sln")),
    ("n-4", include_bytes!("../../sounds/n-4.sln")),
    ("n-5", include_bytes!("../../sounds/n-5.sln")),
    ("n-6", include_bytes!("../../sounds/n-6.sln")),
    ("n-7", include_bytes!("../../sounds/n-7.sln")),
    ("n-8", include_bytes!("../../sounds/n-8.sln")),
    ("n-9", include_bytes!("../../sounds/n-9.sln")),
    ("n-10", include_bytes!("../../sounds/n-10.sln")),
    ("n-11", include_bytes!("../../sounds/n-11.sln")),
    ("n-12", include_bytes!("../../sounds/n-12.sln")),
    ("n-13", include_bytes!("../../sounds/n-13.sln")),
    ("n-14", include_bytes!("../../sounds/n-14.sln")),
    ("n-15", include_bytes!("../../sounds/n-15.sln")),
    ("n-16", include_bytes!("../../sounds/n-16.sln")),
    ("n-17", include_bytes!("../../sounds/n-17.sln")),
    ("n-18", include_bytes!("../../sounds/n-18.sln")),
    ("n-19", include_bytes!("../../sounds/n-19.sln")),
    ("n-20", include_bytes!("../../sounds/n-20.sln")),
    ("n-30", include_bytes!("../../sounds/n-30.sln")),
    ("n-40", include_bytes!("../../sounds/n-40.sln")),
    ("n-50", include_bytes!("../../sounds/n-50.sln")),
    ("n-60", include_bytes!("../../sounds/n-60.sln")),
    ("n-70", include_bytes!("../../sounds/n-70.sln")),
    ("n-80", include_bytes!("../../sounds/n-80.sln")),
    ("n-90", include_bytes!("../../sounds/n-90.sln")),
    ("just-now", include_bytes!("../../sounds/just-now.sln")),
    ("minute-ago", include_bytes!("../../sounds/minute-ago.sln")),
    (
        "minutes-ago",
        include_bytes!("../../sounds/minutes-ago.sln"),
    ),
    ("hour-ago", include_bytes!("../../sounds/hour-ago.sln")),
    ("hours-ago", include_bytes!("../../sounds/hours-ago.sln")),
    ("day-ago", include_bytes!("../../sounds/day-ago.sln")),
    ("days-ago", include_bytes!("../../sounds/days-ago.sln")),
];

/// Write every sound into `dir`, replacing older versions.
pub fn install(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in SOUNDS {
        std::fs::write(dir.join(format!("{name}.sln")), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sounds as engine;

    #[test]
    fn every_sound_the_engine_plays_exists() {
        for name in [
            engine::BEEP,
            engine::ACCEPTED,
            engine::REJECTED,
            engine::MENU,
            engine::SAVED,
            engine::DELETED,
            engine::TOO_LONG,
            engine::GOODBYE,
            engine::INVALID,
            engine::TOO_MANY,
            engine::NO_MESSAGES,
            engine::ERROR,
            engine::NOT_ANSWERED_STORED,
            engine::NOT_AVAILABLE_STORED,
            engine::BUSY_STORED,
            engine::DND_STORED,
            engine::DND_ON,
            engine::AWAY_ON,
            engine::AVAILABLE,
            engine::GROUPS_OFF,
            engine::NEW_MESSAGES,
            engine::MESSAGE_FROM,
        ]
        .into_iter()
        .chain(crate::engine::intro::ALL_SOUNDS.iter().copied())
        {
            let found = SOUNDS.iter().find(|(n, _)| *n == name);
            assert!(found.is_some_and(|(_, b)| b.len() > 800), "{name}");
        }
    }
}
