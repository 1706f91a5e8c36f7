//! Why the loop wakes up, counted by reason: datagrams, TUN frames, kernel sockets, the
//! waker (control requests, the host thread's and the resolver's answers), work left over
//! from the last turn, or one of the service's timers, named as the service names it.

/// What woke the loop in one turn; several at once are usual.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wake {
    pub datagrams: bool,
    pub tun: bool,
    pub sockets: bool,
    pub waker: bool,
    /// Work left from the last turn (a budget ran out).
    pub backlog: bool,
    /// The service's timer, when nothing else woke the loop.
    pub timer: Option<&'static str>,
}

impl Wake {
    fn reasons(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (self.datagrams, "datagrams"),
            (self.tun, "TUN frames"),
            (self.sockets, "kernel sockets"),
            (self.waker, "requests and answers"),
            (self.backlog, "backlog"),
        ]
        .into_iter()
        .filter_map(|(woke, reason)| woke.then_some(reason))
        .chain(self.timer)
    }
}

/// Wake-ups counted by reason.
#[derive(Debug, Default)]
pub(super) struct Wakeups {
    turns: u64,
    counts: Vec<(&'static str, u64)>,
}

impl Wakeups {
    /// Counts one turn of the loop and logs why it happened.
    pub(super) fn count(&mut self, wake: &Wake) {
        self.turns += 1;
        for reason in wake.reasons() {
            match self.counts.iter_mut().find(|(known, _)| *known == reason) {
                Some((_, count)) => *count += 1,
                None => self.counts.push((reason, 1)),
            }
        }
        if log::log_enabled!(log::Level::Trace) {
            let reasons: Vec<&str> = wake.reasons().collect();
            log::trace!("woke up: {}", reasons.join(", "));
        }
    }

    /// How many wake-ups each reason caused, most first.
    pub(super) fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts = self.counts.clone();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// One line for the log: the turns and their reasons.
    pub(super) fn summary(&self) -> String {
        let reasons: Vec<String> = self
            .counts()
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        format!("{} wake-ups: {}", self.turns, reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_of_a_turn_is_counted_and_timers_by_name() {
        let mut wakeups = Wakeups::default();
        wakeups.count(&Wake {
            datagrams: true,
            waker: true,
            ..Wake::default()
        });
        wakeups.count(&Wake {
            datagrams: true,
            ..Wake::default()
        });
        wakeups.count(&Wake {
            timer: Some("wireguard timers"),
            ..Wake::default()
        });
        assert_eq!(
            wakeups.counts(),
            [
                ("datagrams", 2),
                ("requests and answers", 1),
                ("wireguard timers", 1)
            ]
        );
        assert_eq!(
            wakeups.summary(),
            "3 wake-ups: 2 datagrams, 1 requests and answers, 1 wireguard timers"
        );
    }
}
