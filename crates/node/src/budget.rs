//! The node-wide memory budget (`memory_budget_mb`): what the associations and the watch
//! folder may hold at once, taken before bytes are held and given back when dropped.

/// The node-wide memory budget: bytes of instances being received and of deflated data
/// sets being checked, across all associations and the watch folder.
pub struct Budget {
    used: std::sync::atomic::AtomicU64,
    limit: u64,
}

/// Bytes taken from the [`Budget`]; given back when dropped.
pub struct Taken<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            used: Default::default(),
            limit,
        }
    }

    /// Take `bytes`, or None when that would pass the limit.
    pub fn take(&self, bytes: u64) -> Option<Taken<'_>> {
        let mut t = Taken {
            budget: self,
            bytes: 0,
        };
        t.grow(bytes).then_some(t)
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Taken<'_> {
    /// Take `more` bytes too; false (and nothing taken) when that would pass the limit.
    pub fn grow(&mut self, more: u64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let ok = self
            .budget
            .used
            .fetch_update(SeqCst, SeqCst, |u| {
                u.checked_add(more).filter(|n| *n <= self.budget.limit)
            })
            .is_ok();
        if ok {
            self.bytes += more;
        }
        ok
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}
