//! Whether a process belongs to a launched app: it, or one of its ancestors, is an app's
//! process. The parents come from `/proc/PID/stat`, which hides other users' processes when
//! /proc is mounted with `hidepid` (the unit's `ProtectProc=invisible`).

use crate::signal::AppId;

/// Generations followed up from a process before giving up.
const MAX_GENERATIONS: usize = 64;

/// Where a process stands in the launched apps' process trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// It is app N's process or a descendant of it.
    App(AppId),
    /// No launched app is among its ancestors.
    NoApp,
    /// Its tree could not be followed: it has exited, is not visible to this process (another
    /// user's, or in another PID namespace), or an ancestor exited while it was being followed.
    Unknown,
}

/// Follows `pid`'s ancestors with `parent_of` (the parent's pid, 0 for the top of the tree;
/// `None` when the process cannot be seen) until `app_of` names one as an app's process.
pub fn trace(
    pid: Option<u32>,
    app_of: impl Fn(u32) -> Option<AppId>,
    parent_of: impl Fn(u32) -> Option<u32>,
) -> Ancestry {
    let Some(mut current) = pid else {
        return Ancestry::Unknown;
    };
    let Some(mut parent) = parent_of(current) else {
        return Ancestry::Unknown;
    };
    for _ in 0..MAX_GENERATIONS {
        if let Some(app) = app_of(current) {
            return Ancestry::App(app);
        }
        if parent == 0 {
            return Ancestry::NoApp;
        }
        match parent_of(parent) {
            Some(grandparent) => (current, parent) = (parent, grandparent),
            // A parent that exited has been replaced as `current`'s parent before its /proc
            // entry went away: one still named is alive and hidden, so another user's, and an
            // app's tree holds none (apps cannot change their user under the unit).
            None if parent_of(current) == Some(parent) => {
                return app_of(parent).map_or(Ancestry::NoApp, Ancestry::App);
            }
            None => return Ancestry::Unknown,
        }
    }
    Ancestry::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// init (1) ← skywired (100) ← app 7 (200) ← sh (300) ← visctl (400); a login shell (500,
    /// another user's and hidden) ← visctl (600).
    fn tree() -> HashMap<u32, u32> {
        HashMap::from([
            (1, 0),
            (100, 1),
            (200, 100),
            (300, 200),
            (400, 300),
            (600, 500),
        ])
    }

    fn app_of(pid: u32) -> Option<AppId> {
        (pid == 200).then_some(7)
    }

    #[test]
    fn an_apps_descendants_are_its_own() {
        let tree = tree();
        let parent_of = |pid| tree.get(&pid).copied();
        assert_eq!(trace(Some(400), app_of, parent_of), Ancestry::App(7));
        assert_eq!(trace(Some(200), app_of, parent_of), Ancestry::App(7));
        assert_eq!(trace(Some(100), app_of, parent_of), Ancestry::NoApp);
        assert_eq!(trace(Some(1), app_of, parent_of), Ancestry::NoApp);
        // A process under a hidden one (another user's) is outside every app's tree.
        assert_eq!(trace(Some(600), app_of, parent_of), Ancestry::NoApp);
        // A process that is gone, or that the kernel gave no pid for, cannot be followed.
        assert_eq!(trace(Some(999), app_of, parent_of), Ancestry::Unknown);
        assert_eq!(trace(None, app_of, parent_of), Ancestry::Unknown);
    }

    #[test]
    fn an_ancestor_that_exits_meanwhile_leaves_it_unknown() {
        // sh (300) exits after visctl's stat was read: visctl now hangs under init.
        let reads = Cell::new(0);
        let parent_of = |pid: u32| {
            reads.set(reads.get() + 1);
            match pid {
                400 if reads.get() == 1 => Some(300),
                400 => Some(1),
                300 => None,
                other => tree().get(&other).copied(),
            }
        };
        assert_eq!(trace(Some(400), app_of, parent_of), Ancestry::Unknown);
    }

    #[test]
    fn a_loop_or_a_deep_tree_is_not_followed_forever() {
        let parent_of = |pid: u32| Some(if pid == 2 { 3 } else { 2 });
        assert_eq!(trace(Some(2), app_of, parent_of), Ancestry::Unknown);
    }
}
