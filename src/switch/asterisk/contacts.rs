//! How many contacts each PJSIP AOR has, from AMI `ContactStatus` events
//! (`URI`, `AOR`, `ContactStatus`: `Created`, `Reachable`, `Updated`,
//! `NonQualified`, `Unknown` — there; `Removed`, `Unreachable` — gone).
//! Capped: a hostile or runaway peer cannot grow it without bound.

use std::collections::{HashMap, HashSet};

/// Most AORs and most contacts per AOR kept.
const MAX_AORS: usize = 10_000;
const MAX_CONTACTS: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Contacts(HashMap<String, HashSet<String>>);

impl Contacts {
    /// Apply one `ContactStatus`; returns the AOR's new count when the
    /// event was understood and changed or confirmed it.
    pub(super) fn apply(&mut self, aor: &str, uri: &str, status: &str) -> Option<u32> {
        if aor.is_empty() || uri.is_empty() {
            return None;
        }
        let present = match status {
            "Created" | "Reachable" | "Updated" | "NonQualified" | "Unknown" => true,
            "Removed" | "Unreachable" => false,
            _ => return None,
        };
        if present {
            if !self.0.contains_key(aor) && self.0.len() >= MAX_AORS {
                return None;
            }
            let set = self.0.entry(aor.to_owned()).or_default();
            if !set.contains(uri) && set.len() >= MAX_CONTACTS {
                return Some(set.len() as u32);
            }
            set.insert(uri.to_owned());
            Some(set.len() as u32)
        } else {
            let count = match self.0.get_mut(aor) {
                Some(set) => {
                    set.remove(uri);
                    set.len()
                }
                None => 0,
            };
            if count == 0 {
                self.0.remove(aor);
            }
            Some(count as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_counted_per_aor() {
        let mut c = Contacts::default();
        assert_eq!(c.apply("1002", "sip:1002@a", "Created"), Some(1));
        assert_eq!(c.apply("1002", "sip:1002@a", "Reachable"), Some(1));
        assert_eq!(c.apply("1002", "sip:1002@b", "Created"), Some(2));
        assert_eq!(c.apply("1003", "sip:1003@a", "NonQualified"), Some(1));
        assert_eq!(c.apply("1002", "sip:1002@a", "Unreachable"), Some(1));
        assert_eq!(c.apply("1002", "sip:1002@b", "Removed"), Some(0));
        assert_eq!(c.apply("1002", "sip:1002@b", "Removed"), Some(0));
        assert_eq!(c.apply("1002", "sip:x", "Weird"), None);
        assert_eq!(c.apply("", "sip:x", "Created"), None);
    }

    #[test]
    fn a_flood_is_capped() {
        let mut c = Contacts::default();
        for i in 0..200 {
            c.apply("1002", &format!("sip:{i}"), "Created");
        }
        assert_eq!(c.apply("1002", "sip:new", "Created"), Some(64));
        for i in 0..20_000 {
            c.apply(&format!("a{i}"), "sip:x", "Created");
        }
        assert_eq!(c.0.len(), MAX_AORS);
    }
}
