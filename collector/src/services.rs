//! Every service that sent any signal: the services list of `/api/v1/services` includes
//! services without entry spans (a job that only logs, a service that only sends metrics),
//! with zero RED figures and the signals they sent.

use std::collections::HashMap;

use lookout_ingest::signal::Signal;
use parking_lot::Mutex;

/// How long a service stays listed after its last signal.
pub const REMEMBERED_S: u64 = 24 * 3600;

/// When a service last sent each signal (Unix seconds, 0 never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// By [`Signal::index`].
    pub last_s: [u64; 3],
}

impl Seen {
    /// The signals sent, in [`Signal::ALL`] order.
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        Signal::ALL
            .into_iter()
            .filter(|s| self.last_s[s.index()] != 0)
    }

    /// The latest of any signal.
    pub fn last(&self) -> u64 {
        self.last_s.iter().copied().max().unwrap_or(0)
    }
}

/// Services seen, bounded: past `max` new names are not added (and counted).
pub struct Directory {
    seen: Mutex<HashMap<String, Seen>>,
    max: usize,
}

impl Directory {
    /// An empty directory of at most `max` services.
    pub fn new(max: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// `services` sent `signal` at `now_s`.
    pub fn saw_all<'a>(&self, signal: Signal, services: impl Iterator<Item = &'a str>, now_s: u64) {
        let mut seen = self.seen.lock();
        for name in services {
            if let Some(s) = seen.get_mut(name) {
                s.last_s[signal.index()] = now_s;
                continue;
            }
            if seen.len() >= self.max {
                continue;
            }
            let mut s = Seen::default();
            s.last_s[signal.index()] = now_s;
            seen.insert(name.to_string(), s);
        }
    }

    /// Forget services not seen for [`REMEMBERED_S`].
    pub fn expire(&self, now_s: u64) {
        self.seen
            .lock()
            .retain(|_, s| s.last() + REMEMBERED_S > now_s);
    }

    /// Every service, by name.
    pub fn all(&self) -> Vec<(String, Seen)> {
        let mut v: Vec<(String, Seen)> = self
            .seen
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgetting() {
        let d = Directory::new(2);
        d.saw_all(Signal::Logs, ["a", "b"].into_iter(), 100);
        d.saw_all(Signal::Metrics, ["c", "a"].into_iter(), 200);
        let all = d.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, "a");
        assert_eq!(
            all[0].1.signals().collect::<Vec<_>>(),
            [Signal::Logs, Signal::Metrics]
        );
        d.expire(100 + REMEMBERED_S);
        assert_eq!(d.all().len(), 1);
    }
}
