//! Envoy's response flags: why a request did not get the upstream's answer, or what weir did
//! to it. Reported in `response_flags` and in the `x-weir-flags` response header.

use std::fmt;

/// A set of Envoy response flags. Copy, hashable, formatted only when a scrape or an error
/// response needs the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseFlags(u16);

/// Flag names in the order Envoy prints them.
const NAMES: [(ResponseFlags, &str); 10] = [
    (ResponseFlags::DC, "DC"),
    (ResponseFlags::DPE, "DPE"),
    (ResponseFlags::DI, "DI"),
    (ResponseFlags::FI, "FI"),
    (ResponseFlags::NR, "NR"),
    (ResponseFlags::UC, "UC"),
    (ResponseFlags::UF, "UF"),
    (ResponseFlags::UH, "UH"),
    (ResponseFlags::URX, "URX"),
    (ResponseFlags::UT, "UT"),
];

impl ResponseFlags {
    /// No flag: the upstream answered (printed `-`).
    pub const NONE: Self = Self(0);
    /// No route: no VirtualService or rule for the request.
    pub const NR: Self = Self(1 << 0);
    /// No healthy upstream: the subset has no endpoint.
    pub const UH: Self = Self(1 << 1);
    /// Upstream connection failure.
    pub const UF: Self = Self(1 << 2);
    /// Upstream request timeout.
    pub const UT: Self = Self(1 << 3);
    /// Fault injection abort.
    pub const FI: Self = Self(1 << 4);
    /// Fault injection delay.
    pub const DI: Self = Self(1 << 5);
    /// Downstream connection termination: the client went away.
    pub const DC: Self = Self(1 << 6);
    /// Upstream connection termination (reset or protocol error before or during the answer).
    pub const UC: Self = Self(1 << 7);
    /// Upstream retry limit exceeded.
    pub const URX: Self = Self(1 << 8);
    /// Downstream protocol error (a malformed or oversized request head).
    pub const DPE: Self = Self(1 << 9);

    /// Whether no flag is set.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    #[inline]
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_envoy() {
        let rows = [
            (ResponseFlags::NONE, "-"),
            (ResponseFlags::NR, "NR"),
            (ResponseFlags::UF | ResponseFlags::URX, "UF,URX"),
            (ResponseFlags::DI | ResponseFlags::FI, "DI,FI"),
            (ResponseFlags::UT, "UT"),
        ];
        for (flags, text) in rows {
            assert_eq!(flags.to_string(), text);
        }
    }
}
