// SPDX-License-Identifier: GPL-2.0

//! Bit operations on bitmaps stored as 64-bit words: bit `i` is bit `i % 64`
//! of word `i / 64`. In little-endian memory that is exactly the byte and bit
//! order of the kernel's `*_bit_le` bitmaps in a disk log.

/// Words needed for `bits` bits.
pub fn words_for(bits: u64) -> usize {
    bits.div_ceil(64) as usize
}

/// Whether bit `bit` is set. Out-of-range bits read as clear.
pub fn test(words: &[u64], bit: u64) -> bool {
    words
        .get((bit / 64) as usize)
        .is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

/// Sets bit `bit`; returns whether it changed.
pub fn set(words: &mut [u64], bit: u64) -> bool {
    match words.get_mut((bit / 64) as usize) {
        Some(w) => {
            let mask = 1 << (bit % 64);
            let changed = *w & mask == 0;
            *w |= mask;
            changed
        }
        None => false,
    }
}

/// Clears bit `bit`; returns whether it changed.
pub fn clear(words: &mut [u64], bit: u64) -> bool {
    match words.get_mut((bit / 64) as usize) {
        Some(w) => {
            let mask = 1 << (bit % 64);
            let changed = *w & mask != 0;
            *w &= !mask;
            changed
        }
        None => false,
    }
}

/// Sets bits `[0, nbits)` to `value` and clears every bit above, so that
/// bits past the end never count.
pub fn fill(words: &mut [u64], nbits: u64, value: bool) {
    words.fill(0);
    if value {
        set_range(words, 0, nbits);
    }
}

/// Sets bits `[from, to)`.
pub fn set_range(words: &mut [u64], from: u64, to: u64) {
    update_range(words, from, to, true);
}

/// Clears bits `[from, to)`.
pub fn clear_range(words: &mut [u64], from: u64, to: u64) {
    update_range(words, from, to, false);
}

fn update_range(words: &mut [u64], from: u64, to: u64, value: bool) {
    let to = to.min(words.len() as u64 * 64);
    let mut bit = from;
    while bit < to {
        let w = (bit / 64) as usize;
        let lo = bit % 64;
        let hi = (to - (bit - lo)).min(64);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        if value {
            words[w] |= mask;
        } else {
            words[w] &= !mask;
        }
        bit = bit - lo + 64;
    }
}

/// Number of set bits.
pub fn count_ones(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// The first clear bit at or after `start` and below `limit`, or `limit`
/// when there is none.
pub fn next_zero(words: &[u64], start: u64, limit: u64) -> u64 {
    let limit = limit.min(words.len() as u64 * 64);
    if start >= limit {
        return limit;
    }
    let mut w = (start / 64) as usize;
    // Treat the bits below `start` in the first word as set.
    let mut word = words[w] | ((1u64 << (start % 64)) - 1);
    loop {
        if word != u64::MAX {
            let bit = w as u64 * 64 + u64::from((!word).trailing_zeros());
            return bit.min(limit);
        }
        w += 1;
        if w as u64 * 64 >= limit {
            return limit;
        }
        word = words[w];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_bits() {
        let mut w = vec![0u64; 2];
        assert!(set(&mut w, 70));
        assert!(!set(&mut w, 70));
        assert!(test(&w, 70));
        assert!(!test(&w, 69));
        assert!(!test(&w, 1000));
        assert!(!set(&mut w, 128), "out of range is ignored");
        assert!(clear(&mut w, 70));
        assert!(!clear(&mut w, 70));
        assert_eq!(w, [0, 0]);
    }

    #[test]
    fn ranges_and_fill_leave_the_tail_clear() {
        let mut w = vec![0u64; 3];
        fill(&mut w, 130, true);
        assert_eq!(count_ones(&w), 130);
        assert_eq!(w[2], 0b11);
        clear_range(&mut w, 3, 67);
        assert_eq!(count_ones(&w), 130 - 64);
        assert!(test(&w, 2) && !test(&w, 3) && !test(&w, 66) && test(&w, 67));
        set_range(&mut w, 0, 192);
        assert_eq!(count_ones(&w), 192);
        set_range(&mut w, 10, 500);
        assert_eq!(count_ones(&w), 192);
        fill(&mut w, 0, true);
        assert_eq!(count_ones(&w), 0);
    }

    #[test]
    fn next_zero_scans_words() {
        let mut w = vec![0u64; 3];
        fill(&mut w, 150, true);
        assert_eq!(next_zero(&w, 0, 150), 150);
        assert_eq!(next_zero(&w, 0, 192), 150);
        clear(&mut w, 5);
        clear(&mut w, 100);
        assert_eq!(next_zero(&w, 0, 150), 5);
        assert_eq!(next_zero(&w, 5, 150), 5);
        assert_eq!(next_zero(&w, 6, 150), 100);
        assert_eq!(next_zero(&w, 101, 150), 150);
        assert_eq!(next_zero(&w, 200, 150), 150);
        assert_eq!(next_zero(&w, 101, 120), 120);
    }

    #[test]
    fn layout_matches_little_endian_bytes() {
        let mut w = vec![0u64; 1];
        set(&mut w, 0);
        set(&mut w, 9);
        let bytes = w[0].to_le_bytes();
        assert_eq!(bytes[0], 0b1);
        assert_eq!(bytes[1], 0b10);
    }
}
