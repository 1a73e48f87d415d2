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
    ),
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
        ] {
            let found = SOUNDS.iter().find(|(n, _)| *n == name);
            assert!(found.is_some_and(|(_, b)| b.len() > 800), "{name}");
        }
    }
}
