//! Where a new connection goes when several equivalent workers can take it: the tunnel's
//! ends with `--threads N` run N machines (one event loop and, at the local end, one
//! carrier each), and each accepted connection goes to one of them.
//!
//! The rule is pure so that the adapters' accept thread and the simulator place the same
//! way: the least-loaded worker that is ready, and among equals the next one after the
//! last choice, so that a burst of connections (placed before any worker's count has
//! moved) still spreads evenly.

/// How one worker stands, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// It can serve a connection now (a local end whose carrier is up).
    pub ready: bool,
    /// Connections it has open.
    pub open: usize,
}

/// Remembers the last choice, to rotate among equally loaded workers.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    last: Option<usize>,
}

impl Placement {
    /// A placement that has chosen nothing yet.
    pub fn new() -> Placement {
        Placement::default()
    }

    /// The worker for the next connection: the ready one with the fewest open
    /// connections, the first after the last choice among equals; when none is ready, the
    /// same among all (that worker tells the client why it cannot serve). `None` only for
    /// no workers.
    pub fn choose(&mut self, loads: &[Load]) -> Option<usize> {
        let any_ready = loads.iter().any(|l| l.ready);
        let start = self.last.map_or(0, |last| last + 1);
        let chosen = (0..loads.len())
            .map(|k| (start + k) % loads.len())
            .filter(|&i| loads[i].ready || !any_ready)
            .min_by_key(|&i| loads[i].open)?;
        self.last = Some(chosen);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn ready(open: usize) -> Load {
        Load { ready: true, open }
    }

    #[test]
    fn the_least_loaded_ready_worker_is_chosen() {
        let mut placement = Placement::new();
        let down = Load { ready: false, open: 0 };
        assert_eq!(placement.choose(&[ready(3), down, ready(1), ready(2)]), Some(2));
        assert_eq!(placement.choose(&[]), None);
    }

    #[test]
    fn a_burst_on_equal_counts_goes_round_the_workers() {
        let mut placement = Placement::new();
        let loads = [ready(0), ready(0), ready(0)];
        let chosen: Vec<_> = (0..6).filter_map(|_| placement.choose(&loads)).collect();
        assert_eq!(chosen, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn with_no_worker_ready_the_least_loaded_of_all_is_chosen() {
        let mut placement = Placement::new();
        let loads = [Load { ready: false, open: 2 }, Load { ready: false, open: 1 }];
        assert_eq!(placement.choose(&loads), Some(1));
    }

    quickcheck! {
        /// The choice is never busier than another worker of its kind, and never a worker
        /// that is not ready while another is.
        fn never_a_busier_or_unready_worker(loads: Vec<(bool, u8)>, last: Option<u8>) -> bool {
            let loads: Vec<Load> = loads.into_iter().map(|(ready, open)| Load { ready, open: open.into() }).collect();
            let mut placement = Placement { last: last.map(usize::from) };
            match placement.choose(&loads) {
                None => loads.is_empty(),
                Some(i) => {
                    let any_ready = loads.iter().any(|l| l.ready);
                    let peers = loads.iter().filter(|l| l.ready || !any_ready);
                    (loads[i].ready || !any_ready) && peers.clone().all(|l| l.open >= loads[i].open)
                }
            }
        }
    }
}
