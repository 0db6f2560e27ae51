// SPDX-License-Identifier: GPL-2.0

//! A log's geometry from the region size its server sent: the size must be a
//! nonzero power of two that fits the dirty log API's `u32` (device-mapper
//! shifts by it; the C module divides by it unchecked). Uses `core` only;
//! compiled on the host too.

use core::fmt;

/// Region size and count of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Sectors per region.
    pub(crate) region_size: u32,
    /// Regions covering the target.
    pub(crate) region_count: u64,
}

/// A region size no mirror can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadRegionSize(pub(crate) u64);

impl fmt::Display for BadRegionSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server sent region size {}: not a power of two between 1 and 2^31 sectors",
            self.0
        )
    }
}

impl Geometry {
    /// The geometry of a target of `target_sectors` with the `region_size`
    /// the server sent.
    pub(crate) fn new(target_sectors: u64, region_size: u64) -> Result<Self, BadRegionSize> {
        let size = u32::try_from(region_size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .ok_or(BadRegionSize(region_size))?;
        Ok(Self {
            region_size: size,
            region_count: target_sectors.div_ceil(u64::from(size)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_sizes_give_a_rounded_up_count() {
        assert_eq!(
            Geometry::new(131072, 1024),
            Ok(Geometry {
                region_size: 1024,
                region_count: 128
            })
        );
        assert_eq!(Geometry::new(1025, 1024).unwrap().region_count, 2);
        assert_eq!(Geometry::new(0, 8).unwrap().region_count, 0);
        assert_eq!(Geometry::new(u64::MAX, 1).unwrap().region_count, u64::MAX);
        assert_eq!(Geometry::new(7, 1 << 31).unwrap().region_count, 1);
    }

    #[test]
    fn invalid_sizes_are_refused() {
        for bad in [0, 3, 1000, 1 << 32, u64::MAX] {
            assert_eq!(Geometry::new(100, bad), Err(BadRegionSize(bad)));
        }
    }
}
