//! The keys of contacts this process has durably settled `sent` (see
//! [`crate::Store::settle_noting_sent`]), so that the gateway's acknowledgement of such a
//! contact can be answered without a write.
//!
//! Kannel sends two delivery reports per message: the SMSC's acknowledgement (DLR type 8)
//! and the final state. The acknowledgement is only ever read as proof of submission for a
//! contact still `pending` (in the work queue): the dispatcher's `reported_keys` before a
//! contact is sent again, `settle_doubtful` after a crash, attribution's `Submitted` for a
//! claimed contact. Once a committed settle has moved a contact from `pending` to `sent`,
//! its queue row is gone and its state never goes back, so none of those reads can ask
//! about it again: storing its acknowledgement (half of all reports) and attributing it
//! would change nothing.
//!
//! Only what this process saw commit is here: a key missing (an acknowledgement that beat
//! its settle's commit, a contact another replica settled, a restart, a key evicted) is
//! stored as before. Bounded: two generations of [`GENERATION`] keys; when the newer fills,
//! the older is dropped. An acknowledgement comes within seconds of its message, so at
//! thousands of messages a second the newest tens of thousands of keys are the ones asked.

use std::collections::HashSet;
use std::sync::Mutex;

/// Keys per generation; at most twice this many are kept.
pub const GENERATION: usize = 32_768;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SentKeys {
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    newer: HashSet<String>,
    older: HashSet<String>,
}

impl SentKeys {
    /// Remembers `keys`. Only for contacts a committed transaction moved from `pending` to
    /// `sent` (or further): an acknowledgement of a key here is not stored.
    pub fn insert<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys {
            if g.newer.len() >= GENERATION {
                g.older = std::mem::take(&mut g.newer);
            }
            g.newer.insert(k.to_owned());
        }
    }

    /// Whether `key`'s contact is known here to be durably past `pending`.
    pub fn contains(&self, key: &str) -> bool {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.newer.contains(key) || g.older.contains(key)
    }

    /// Keys remembered now (at most `2 * GENERATION`).
    pub fn len(&self) -> usize {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.newer.len() + g.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{GENERATION, SentKeys};

    #[test]
    fn keeps_two_generations_and_drops_the_oldest() {
        let s = SentKeys::default();
        assert!(!s.contains("a"));
        s.insert(["a", "b"]);
        assert!(s.contains("a") && s.contains("b") && !s.contains("c"));
        let first: Vec<String> = (0..GENERATION - 2).map(|i| format!("k{i}")).collect();
        s.insert(first.iter().map(String::as_str));
        assert_eq!(s.len(), GENERATION);
        // The next key starts a new generation; the full one is still asked.
        s.insert(["c"]);
        assert!(s.contains("a") && s.contains("c"));
        assert_eq!(s.len(), GENERATION + 1);
        let second: Vec<String> = (0..GENERATION - 1).map(|i| format!("m{i}")).collect();
        s.insert(second.iter().map(String::as_str));
        assert!(s.contains("a"), "still in the older generation");
        // A third generation drops the first.
        s.insert(["d"]);
        assert!(!s.contains("a") && !s.contains("k0"));
        assert!(s.contains("c") && s.contains("d") && s.contains("m0"));
        assert!(s.len() <= 2 * GENERATION);
    }
}
