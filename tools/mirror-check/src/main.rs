// SPDX-License-Identifier: GPL-2.0

//! mirror-check: writes a mirror with blocks whose content is known, and
//! later checks each leg against the writes the mirror acknowledged.
//!
//! A mirror whose log lost a mark, or that sent a write to one leg only
//! while counting the region in sync, ends with a leg that holds neither the
//! last acknowledged write nor the same data as the other legs, and may
//! still report itself in sync. Comparing the legs with each other misses a
//! write that reached no leg; comparing them with what was acknowledged
//! misses nothing.
//!
//! `write` sends runs of 4 KiB blocks with O_DIRECT from several threads.
//! Each thread owns its own stripes of the device, so no two writes in
//! flight overlap and "the last acknowledged write of a block" is well
//! defined. Every block carries its number and a generation, and bytes that
//! are a pure function of (seed, block, generation). On SIGINT or SIGTERM
//! (or after `--seconds`) the threads finish their write in flight and the
//! journal is written: the generation last acknowledged for each block (0:
//! never written; a block whose write failed is marked unknown).
//!
//! `verify` reads each leg and checks every block against the journal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
Usage: mirror-check write DEVICE --journal FILE [--seed N] [--threads N]
                          [--max-blocks N] [--seconds N] [--writes N] [--more]
       mirror-check verify --journal FILE LEG...

write   Writes runs of 1 to --max-blocks (16) 4 KiB blocks at random places
        of DEVICE (O_DIRECT, --threads (4) at a time, never overlapping)
        until SIGINT or SIGTERM, for --seconds, or --writes in all (the
        blocks written then depend on --seed alone); then stores in FILE
        the generation of each block's last acknowledged write. With
        --more, FILE holds an earlier run's journal: this run goes on from
        it (its seed, later generations), and FILE then covers both.
        Prints writes=, blocks=, errors=.
verify  Checks that every block of each LEG (a mirror leg, data at offset
        0) holds the last acknowledged write of the journal, or zeros if
        the block was never written (blocks whose write failed are not
        checked). Prints checked=, unknown= and mismatches= per leg, and
        the first mismatching blocks; exits 1 on any mismatch.
";

/// Bytes per block.
const BLOCK: usize = 4096;

/// Generation of a block whose write failed: either content may be there.
const UNKNOWN: u32 = u32::MAX;

/// First line of a journal.
const MAGIC: &[u8] = b"dmlu-mirror-check 1\n";

/// A 64-bit mix (SplitMix64's finaliser): the content of every word of a
/// block, and the writers' choices, are this function of their inputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `out` (one block) with the content of `block` at generation `gen`:
/// its number and generation first, then words derived from them.
fn fill(out: &mut [u8], seed: u64, block: u64, gen: u32) {
    let key = mix(seed ^ mix(block ^ (u64::from(gen) << 40)));
    for (i, w) in out.chunks_exact_mut(8).enumerate() {
        let v = match i {
            0 => block,
            1 => u64::from(gen),
            _ => mix(key ^ i as u64),
        };
        w.copy_from_slice(&v.to_le_bytes());
    }
}

/// A block-aligned buffer of `blocks` blocks, for O_DIRECT.
struct Aligned {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(blocks: usize) -> Self {
        let len = blocks * BLOCK;
        let raw = vec![0u8; len + BLOCK];
        let off = raw.as_ptr().align_offset(BLOCK);
        Self { raw, off, len }
    }

    fn bytes(&mut self, n: usize) -> &mut [u8] {
        &mut self.raw[self.off..self.off + n.min(self.len)]
    }
}

fn open_direct(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn device_blocks(f: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = f;
    Ok(f.seek(io::SeekFrom::End(0))? / BLOCK as u64)
}

struct WriteOptions {
    device: PathBuf,
    journal: PathBuf,
    seed: u64,
    threads: u64,
    max_blocks: u64,
    seconds: Option<u64>,
    writes: Option<u64>,
    more: bool,
}

/// What one writer thread did.
struct Done {
    /// `(block, generation)` of every block written, in order.
    acked: Vec<(u64, u32)>,
    writes: u64,
    errors: u64,
}

fn write(o: &WriteOptions) -> io::Result<()> {
    let dev = open_direct(&o.device, true)?;
    let blocks = device_blocks(&dev)?;
    let earlier = if o.more {
        read_journal(&o.journal)?
    } else {
        Journal {
            seed: o.seed,
            gens: vec![0; blocks as usize],
        }
    };
    if earlier.gens.len() as u64 != blocks {
        return Err(io::Error::other(format!(
            "{}: the journal has {} blocks, the device {blocks}",
            o.device.display(),
            earlier.gens.len()
        )));
    }
    let seed = earlier.seed;
    let first_gen = earlier
        .gens
        .iter()
        .filter(|&&g| g != UNKNOWN)
        .max()
        .copied()
        .unwrap_or(0);
    let stripe = o.max_blocks;
    let stripes = blocks / stripe;
    if stripes < o.threads {
        return Err(io::Error::other(format!(
            "{}: {blocks} blocks are too few for {} threads of {stripe}-block stripes",
            o.device.display(),
            o.threads
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let deadline = o.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let gen = Arc::new(AtomicU64::new(u64::from(first_gen)));
    let dev = Arc::new(dev);
    let handles: Vec<_> = (0..o.threads)
        .map(|t| {
            let (dev, stop, gen) = (Arc::clone(&dev), Arc::clone(&stop), Arc::clone(&gen));
            let threads = o.threads;
            // Each thread's share of --writes.
            let quota = o
                .writes
                .map(|n| n / threads + u64::from(t < n % threads))
                .unwrap_or(u64::MAX);
            std::thread::spawn(move || {
                let mut buf = Aligned::new(stripe as usize);
                let mut done = Done {
                    acked: Vec::new(),
                    writes: 0,
                    errors: 0,
                };
                let mut pick = mix(seed ^ t ^ (u64::from(first_gen) << 32));
                // Stripes t, t + threads, ... belong to this thread.
                let mine = (stripes - t).div_ceil(threads);
                while !stop.load(Ordering::Relaxed)
                    && deadline.is_none_or(|d| Instant::now() < d)
                    && done.writes < quota
                {
                    pick = mix(pick);
                    let s = t + (pick % mine) * threads;
                    let first = s * stripe + (pick >> 20) % stripe;
                    let n = 1 + (pick >> 40) % (stripe - (first - s * stripe));
                    let g = gen.fetch_add(1, Ordering::Relaxed) as u32 + 1;
                    let data = buf.bytes(n as usize * BLOCK);
                    for (i, b) in data.chunks_exact_mut(BLOCK).enumerate() {
                        fill(b, seed, first + i as u64, g);
                    }
                    done.writes += 1;
                    let ok = dev.write_all_at(data, first * BLOCK as u64).is_ok();
                    if !ok {
                        done.errors += 1;
                    }
                    let g = if ok { g } else { UNKNOWN };
                    done.acked.extend((first..first + n).map(|b| (b, g)));
                }
                done
            })
        })
        .collect();
    let mut journal = earlier.gens;
    let (mut writes, mut errors) = (0, 0);
    for h in handles {
        let done = h
            .join()
            .map_err(|_| io::Error::other("a writer thread panicked"))?;
        for (b, g) in done.acked {
            journal[b as usize] = g;
        }
        writes += done.writes;
        errors += done.errors;
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + journal.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seed.to_le_bytes());
    out.extend_from_slice(&blocks.to_le_bytes());
    for g in &journal {
        out.extend_from_slice(&g.to_le_bytes());
    }
    let tmp = o.journal.with_extension("tmp");
    File::create(&tmp)?.write_all(&out)?;
    std::fs::rename(&tmp, &o.journal)?;
    let written = journal.iter().filter(|&&g| g != 0).count();
    println!("writes={writes}\nblocks={written}\nerrors={errors}");
    Ok(())
}

/// A journal: the seed and the generation of each block.
struct Journal {
    seed: u64,
    gens: Vec<u32>,
}

fn read_journal(path: &Path) -> io::Result<Journal> {
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let bad = || io::Error::other(format!("{}: not a mirror-check journal", path.display()));
    let rest = raw.strip_prefix(MAGIC).ok_or_else(bad)?;
    if rest.len() < 16 {
        return Err(bad());
    }
    let (head, gens) = rest.split_at(16);
    let seed = u64::from_le_bytes(head[..8].try_into().map_err(|_| bad())?);
    let blocks = u64::from_le_bytes(head[8..].try_into().map_err(|_| bad())?);
    if gens.len() as u64 != blocks * 4 {
        return Err(bad());
    }
    let gens = gens
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Journal { seed, gens })
}

/// Blocks read from a leg at a time.
const READ_BLOCKS: usize = 256;

/// Checks one leg; returns whether it holds every acknowledged write.
fn verify_leg(j: &Journal, leg: &Path) -> io::Result<bool> {
    let dev = open_direct(leg, false)?;
    let blocks = j.gens.len() as u64;
    if device_blocks(&dev)? < blocks {
        return Err(io::Error::other(format!(
            "{}: shorter than the {blocks} blocks of the journal",
            leg.display()
        )));
    }
    let mut buf = Aligned::new(READ_BLOCKS);
    let mut want = vec![0u8; BLOCK];
    let (mut checked, mut unknown, mut bad) = (0u64, 0u64, Vec::new());
    for start in (0..blocks).step_by(READ_BLOCKS) {
        let n = (blocks - start).min(READ_BLOCKS as u64) as usize;
        let data = buf.bytes(n * BLOCK);
        dev.read_exact_at(data, start * BLOCK as u64)?;
        for (i, got) in data.chunks_exact(BLOCK).enumerate() {
            let b = start + i as u64;
            match j.gens[b as usize] {
                UNKNOWN => {
                    unknown += 1;
                    continue;
                }
                0 => want.fill(0),
                g => fill(&mut want, j.seed, b, g),
            }
            checked += 1;
            if got != &want[..] {
                bad.push(b);
            }
        }
    }
    let name = leg.display();
    println!(
        "{name}: checked={checked} unknown={unknown} mismatches={}",
        bad.len()
    );
    for &b in bad.iter().take(8) {
        let off = b as usize;
        let mut got = Aligned::new(1);
        dev.read_exact_at(got.bytes(BLOCK), b * BLOCK as u64)?;
        let g = got.bytes(BLOCK);
        let word = |i: usize| u64::from_le_bytes(g[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        println!(
            "{name}: block {off}: expected generation {}, found block {} generation {}",
            j.gens[off],
            word(0),
            word(1)
        );
    }
    Ok(bad.is_empty())
}

fn parse_number(flag: &str, v: Option<String>) -> Result<u64, String> {
    v.ok_or_else(|| format!("{flag} needs a value"))?
        .parse()
        .map_err(|_| format!("{flag}: not a number"))
}

fn run(args: Vec<String>) -> Result<bool, String> {
    let mut it = args.into_iter();
    let cmd = it.next().ok_or("no command (see --help)")?;
    let mut journal = None;
    let mut paths = Vec::new();
    let (mut seed, mut threads, mut max_blocks) = (1, 4, 16);
    let (mut seconds, mut writes, mut more) = (None, None, false);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--journal" => journal = it.next().map(PathBuf::from),
            "--seed" => seed = parse_number(&a, it.next())?,
            "--threads" => threads = parse_number(&a, it.next())?.max(1),
            "--max-blocks" => max_blocks = parse_number(&a, it.next())?.max(1),
            "--seconds" => seconds = Some(parse_number(&a, it.next())?),
            "--writes" => writes = Some(parse_number(&a, it.next())?),
            "--more" => more = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(true);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s} (see --help)")),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let journal = journal.ok_or("--journal FILE is required")?;
    match cmd.as_str() {
        "write" => {
            let [device] = <[PathBuf; 1]>::try_from(paths)
                .map_err(|_| "write takes one DEVICE".to_string())?;
            write(&WriteOptions {
                device,
                journal,
                seed,
                threads,
                max_blocks,
                seconds,
                writes,
                more,
            })
            .map_err(|e| e.to_string())?;
            Ok(true)
        }
        "verify" => {
            if paths.is_empty() {
                return Err("verify needs at least one LEG".into());
            }
            let j = read_journal(&journal).map_err(|e| e.to_string())?;
            let mut all = true;
            for leg in &paths {
                all &= verify_leg(&j, leg).map_err(|e| e.to_string())?;
            }
            Ok(all)
        }
        "-h" | "--help" => {
            print!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command '{other}' (see --help)")),
    }
}

fn main() {
    match run(std::env::args().skip(1).collect()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("mirror-check: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_depends_on_seed_block_and_generation() {
        let mut a = vec![0u8; BLOCK];
        let mut b = vec![0u8; BLOCK];
        fill(&mut a, 1, 7, 3);
        fill(&mut b, 1, 7, 3);
        assert_eq!(a, b);
        for (seed, block, gen) in [(2, 7, 3), (1, 8, 3), (1, 7, 4)] {
            fill(&mut b, seed, block, gen);
            assert_ne!(a, b, "{seed} {block} {gen}");
        }
        assert_eq!(&a[..8], &7u64.to_le_bytes());
        assert_eq!(&a[8..16], &3u64.to_le_bytes());
    }

    #[test]
    fn a_journal_round_trips_and_a_leg_is_checked_against_it() {
        let dir = std::env::temp_dir().join(format!("mirror-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let leg = dir.join("leg");
        let mut content = vec![0u8; 8 * BLOCK];
        fill(&mut content[2 * BLOCK..3 * BLOCK], 9, 2, 5);
        std::fs::write(&leg, &content).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&9u64.to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
        for g in [0u32, 0, 5, 0, UNKNOWN, 0, 0, 0] {
            out.extend_from_slice(&g.to_le_bytes());
        }
        let jpath = dir.join("journal");
        std::fs::write(&jpath, &out).unwrap();
        let j = read_journal(&jpath).unwrap();
        assert_eq!(j.gens[2], 5);
        // O_DIRECT may not be available on the test's filesystem (tmpfs).
        if open_direct(&leg, false).is_ok() {
            assert!(verify_leg(&j, &leg).unwrap());
            content[2 * BLOCK + 100] ^= 1;
            std::fs::write(&leg, &content).unwrap();
            assert!(!verify_leg(&j, &leg).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
