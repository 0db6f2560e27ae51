// SPDX-License-Identifier: GPL-2.0

//! The on-disk format of the kernel's `disk` dirty log (drivers/md/dm-log.c),
//! so a log device can move between the kernel's log and dm-ulogd:
//!
//! ```text
//! byte 0     struct log_header_disk { __le32 magic; __le32 version; __le64 nr_regions; }
//! byte 1024  (sector LOG_OFFSET = 2) the clean bitmap: bit i set = region i clean,
//!            little-endian bit order (bit i is bit i % 8 of byte i / 8),
//!            round_up(nr_regions, 64) bits long
//! ```
//!
//! The whole image is `round_up(1024 + bitmap bytes, logical block size)`
//! bytes and is what dm-log reads and writes in one I/O.

use crate::bitmap;

/// `MIRROR_MAGIC`, "MiRr".
pub const MIRROR_MAGIC: u32 = 0x4D69_5272;

/// `MIRROR_DISK_VERSION`.
pub const MIRROR_DISK_VERSION: u32 = 2;

/// Byte offset of the bitmap: `LOG_OFFSET` (2) sectors.
pub const BITMAP_OFFSET: usize = 2 * 512;

/// Dirty tracking granularity within the bitmap, in bytes (one sector).
pub const CHUNK_BYTES: usize = 512;

/// Words of bitmap per chunk.
pub const CHUNK_WORDS: usize = CHUNK_BYTES / 8;

/// Size of the bitmap on disk: the kernel rounds to `BITS_PER_LONG` (64).
pub fn bitmap_bytes(region_count: u64) -> usize {
    bitmap::words_for(region_count) * 8
}

/// Size of the whole image for `region_count` regions on a device with
/// `block_size`-byte logical blocks.
pub fn image_bytes(region_count: u64, block_size: usize) -> usize {
    (BITMAP_OFFSET + bitmap_bytes(region_count)).next_multiple_of(block_size.max(1))
}

/// `struct log_header_disk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskHeader {
    /// `MIRROR_MAGIC` on a valid log.
    pub magic: u32,
    /// `MIRROR_DISK_VERSION` on a current log.
    pub version: u32,
    /// Regions the bitmap describes.
    pub nr_regions: u64,
}

impl DiskHeader {
    /// A current header for `nr_regions` regions.
    pub fn current(nr_regions: u64) -> Self {
        Self {
            magic: MIRROR_MAGIC,
            version: MIRROR_DISK_VERSION,
            nr_regions,
        }
    }

    /// Reads the header from the start of an image.
    pub fn decode(image: &[u8]) -> Option<Self> {
        let b = image.get(..16)?;
        Some(Self {
            magic: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            version: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            nr_regions: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        })
    }

    /// Writes the header at the start of an image.
    pub fn encode(&self, image: &mut [u8]) {
        if let Some(b) = image.get_mut(..16) {
            b[0..4].copy_from_slice(&self.magic.to_le_bytes());
            b[4..8].copy_from_slice(&self.version.to_le_bytes());
            b[8..16].copy_from_slice(&self.nr_regions.to_le_bytes());
        }
    }

    /// How many leading regions of the on-disk bitmap a default-mode log
    /// may trust, as dm-log's `read_header` decides: none on a bad magic,
    /// all `nr_regions` on a valid one. A version other than 2 (1 is the
    /// same layout on little-endian hosts) is `Err(version)`.
    pub fn trusted_regions(&self) -> Result<u64, u32> {
        if self.magic != MIRROR_MAGIC {
            return Ok(0);
        }
        match self.version {
            MIRROR_DISK_VERSION => Ok(self.nr_regions),
            1 if cfg!(target_endian = "little") => Ok(self.nr_regions),
            v => Err(v),
        }
    }
}

/// A buffer holding a whole log image, aligned for `O_DIRECT`.
#[derive(Debug)]
pub struct DiskImage {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl DiskImage {
    /// A zeroed image of `len` bytes aligned to `align` bytes (a power of
    /// two).
    pub fn new(len: usize, align: usize) -> Self {
        let buf = vec![0u8; len + align];
        let start = buf.as_ptr().align_offset(align).min(align);
        Self { buf, start, len }
    }

    /// The image bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The image bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The header.
    pub fn header(&self) -> DiskHeader {
        DiskHeader::decode(self.bytes()).unwrap_or(DiskHeader {
            magic: 0,
            version: 0,
            nr_regions: 0,
        })
    }

    /// Replaces the header.
    pub fn set_header(&mut self, header: DiskHeader) {
        header.encode(self.bytes_mut());
    }

    /// The bitmap area (everything after the header sectors).
    pub fn bitmap(&self) -> &[u8] {
        self.bytes().get(BITMAP_OFFSET..).unwrap_or(&[])
    }

    /// Copies bitmap chunk `chunk` from the in-memory `words`.
    pub fn store_chunk(&mut self, words: &[u64], chunk: usize) {
        let first = chunk * CHUNK_WORDS;
        let Some(src) = words.get(first..(first + CHUNK_WORDS).min(words.len())) else {
            return;
        };
        let at = BITMAP_OFFSET + first * 8;
        if let Some(dst) = self.bytes_mut().get_mut(at..at + src.len() * 8) {
            for (d, w) in dst.chunks_exact_mut(8).zip(src) {
                d.copy_from_slice(&w.to_le_bytes());
            }
        }
    }

    /// Copies every chunk of `words` into the image.
    pub fn store_all(&mut self, words: &[u64]) {
        for chunk in 0..words.len().div_ceil(CHUNK_WORDS) {
            self.store_chunk(words, chunk);
        }
    }

    /// The block-aligned byte range of the image that holds chunk `chunk`.
    pub fn chunk_blocks(&self, chunk: usize, block_size: usize) -> (usize, usize) {
        let start = BITMAP_OFFSET + chunk * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(self.len);
        let bs = block_size.max(1);
        (
            start / bs * bs,
            end.next_multiple_of(bs).min(self.len.max(start)),
        )
    }
}

/// Reads the first `nbits` bits of an on-disk bitmap into `words` (bits
/// from `nbits` on are left as they are).
pub fn load_bits(bitmap: &[u8], words: &mut [u64], nbits: u64) {
    let full_words = ((nbits / 64) as usize).min(words.len());
    for (w, src) in words[..full_words].iter_mut().zip(bitmap.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(src);
        *w = u64::from_le_bytes(b);
    }
    let rest = nbits % 64;
    if rest != 0 && full_words < words.len() {
        let mut b = [0u8; 8];
        if let Some(src) = bitmap.get(full_words * 8..full_words * 8 + 8) {
            b.copy_from_slice(src);
        }
        let mask = (1u64 << rest) - 1;
        let w = &mut words[full_words];
        *w = (*w & !mask) | (u64::from_le_bytes(b) & mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dm_log() {
        assert_eq!(bitmap_bytes(1), 8);
        assert_eq!(bitmap_bytes(64), 8);
        assert_eq!(bitmap_bytes(65), 16);
        assert_eq!(image_bytes(1, 512), 1536);
        assert_eq!(image_bytes(1, 4096), 4096);
        assert_eq!(image_bytes(8192, 512), 1024 + 1024);
        assert_eq!(image_bytes(8193, 512), 1024 + 1536);
    }

    #[test]
    fn header_is_little_endian_at_offset_0() {
        let mut img = DiskImage::new(1536, 4096);
        assert_eq!(img.bytes().as_ptr() as usize % 4096, 0);
        img.set_header(DiskHeader::current(0x0102_0304_0506));
        assert_eq!(&img.bytes()[0..4], &[0x72, 0x52, 0x69, 0x4d]);
        assert_eq!(&img.bytes()[4..8], &[2, 0, 0, 0]);
        assert_eq!(&img.bytes()[8..16], &[6, 5, 4, 3, 2, 1, 0, 0]);
        assert_eq!(img.header(), DiskHeader::current(0x0102_0304_0506));
        assert_eq!(img.header().trusted_regions(), Ok(0x0102_0304_0506));
    }

    #[test]
    fn trust_depends_on_magic_and_version() {
        let mut h = DiskHeader::current(10);
        h.magic = 0;
        assert_eq!(h.trusted_regions(), Ok(0));
        let mut h = DiskHeader::current(10);
        h.version = 1;
        assert_eq!(h.trusted_regions(), Ok(10));
        h.version = 3;
        assert_eq!(h.trusted_regions(), Err(3));
    }

    #[test]
    fn chunks_map_to_aligned_blocks() {
        let img = DiskImage::new(image_bytes(40_000, 4096), 4096);
        assert_eq!(img.chunk_blocks(0, 512), (1024, 1536));
        assert_eq!(img.chunk_blocks(0, 4096), (0, 4096));
        assert_eq!(img.chunk_blocks(6, 4096), (4096, 8192));
        let small = DiskImage::new(image_bytes(10, 512), 512);
        assert_eq!(small.chunk_blocks(0, 512), (1024, 1536));
    }

    #[test]
    fn bits_round_trip_through_the_image() {
        let mut words = vec![0u64; 9];
        bitmap::set(&mut words, 0);
        bitmap::set(&mut words, 9);
        bitmap::set(&mut words, 520);
        let mut img = DiskImage::new(image_bytes(576, 512), 512);
        img.store_all(&words);
        assert_eq!(img.bitmap()[0], 1);
        assert_eq!(img.bitmap()[1], 2);
        assert_eq!(img.bitmap()[65], 1);
        let mut back = vec![u64::MAX; 9];
        load_bits(img.bitmap(), &mut back, 576);
        assert_eq!(back, words);
        let mut part = vec![u64::MAX; 9];
        load_bits(img.bitmap(), &mut part, 10);
        assert_eq!(part[0], 0b10_0000_0001 | (u64::MAX << 10));
        assert_eq!(part[1], u64::MAX, "bits past nbits untouched");
    }
}
