//! The zip format, as far as an append needs it: the central directory read as raw
//! records (so an update copies them, never re-encodes them), members written as a
//! local header, their data and a patched header, and the directory written back
//! with its end records (zip64 when the counts, sizes or offsets need it).
//!
//! Invariant: every record written follows APPNOTE 6.3: sizes and offsets that do not
//! fit 32 bits are 0xFFFFFFFF with the value in a zip64 extra field, and names are
//! flagged UTF-8.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{SystemTime, UNIX_EPOCH};

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const EOCD: u32 = 0x0605_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// Sizes at or above this are written with zip64 fields (deflate may grow incompressible
/// data by a little, so the margin keeps the compressed size below 4 GiB too).
const ZIP64_AT: u64 = 0xFFFF_0000;

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One member: its name's bytes exactly as the archive holds them (UTF-8 or not) and
/// its central-directory record, byte for byte.
#[derive(Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub raw: Vec<u8>,
}

/// The upper half of code page 437, which zip readers use for a name without the
/// UTF-8 flag (general purpose bit 11).
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// `name` as a zip reader shows a name stored without the UTF-8 flag.
fn from_cp437(name: &[u8]) -> String {
    let high: Vec<char> = CP437_HIGH.chars().collect();
    name.iter()
        .map(|&b| {
            if b < 0x80 {
                char::from(b)
            } else {
                high[usize::from(b - 0x80)]
            }
        })
        .collect()
}

/// An archive's central directory.
#[derive(Clone, Default)]
pub struct Directory {
    entries: Vec<Entry>,
    /// By the name's exact bytes: two names that differ in any byte are two members.
    index: HashMap<Vec<u8>, usize>,
    /// Where the directory starts: an update writes its members from here.
    pub cd_offset: u64,
}

impl Directory {
    /// Whether a member of this name exists: the same bytes, or a name stored without
    /// the UTF-8 flag that a zip reader shows as `name` (code page 437), which a
    /// second member of that name would duplicate for every reader.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name.as_bytes())
            || (!name.is_ascii()
                && self.entries.iter().any(|e| {
                    let utf8_flag = u16_at(&e.raw, 8) & 0x0800 != 0;
                    !utf8_flag && !e.name.is_ascii() && from_cp437(&e.name) == name
                }))
    }

    /// The CRC-32 and size of member `name`, from its directory record (`None` for
    /// a member whose size is in a zip64 field).
    pub fn crc_and_size(&self, name: &str) -> Option<(u32, u64)> {
        let raw = &self.entries[*self.index.get(name.as_bytes())?].raw;
        let size = u32_at(raw, 24);
        (size != 0xFFFF_FFFF).then(|| (u32_at(raw, 16), u64::from(size)))
    }

    /// How many members there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `entry`, replacing a member of the same name.
    pub fn insert(&mut self, entry: Entry) {
        match self.index.get(&entry.name) {
            Some(&at) => self.entries[at] = entry,
            None => {
                self.index.insert(entry.name.clone(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// Reads the directory of the archive `file`, `len` bytes long.
    pub fn read(file: &File, len: u64) -> io::Result<Directory> {
        if len == 0 {
            return Ok(Directory::default());
        }
        let tail_len = len.min(22 + 0xFFFF);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, len - tail_len)?;
        // The end record is the last signature whose comment runs exactly to the end.
        let eocd = (0..=tail.len().saturating_sub(22))
            .rev()
            .find(|&at| {
                u32_at(&tail, at) == EOCD
                    && at + 22 + usize::from(u16_at(&tail, at + 20)) == tail.len()
            })
            .ok_or_else(|| bad("no end-of-central-directory record: not a zip archive"))?;
        let eocd_pos = len - tail_len + eocd as u64;
        let mut count = u64::from(u16_at(&tail, eocd + 10));
        let mut cd_size = u64::from(u32_at(&tail, eocd + 12));
        let mut cd_offset = u64::from(u32_at(&tail, eocd + 16));
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            let mut locator = [0u8; 20];
            let at = eocd_pos
                .checked_sub(20)
                .ok_or_else(|| bad("a zip64 archive without its locator"))?;
            file.read_exact_at(&mut locator, at)?;
            if u32_at(&locator, 0) != ZIP64_LOCATOR {
                return Err(bad("a zip64 archive without its locator"));
            }
            let mut record = [0u8; 56];
            file.read_exact_at(&mut record, u64_at(&locator, 8))?;
            if u32_at(&record, 0) != ZIP64_EOCD {
                return Err(bad("the zip64 end record is missing"));
            }
            count = u64_at(&record, 32);
            cd_size = u64_at(&record, 40);
            cd_offset = u64_at(&record, 48);
        }
        if cd_offset
            .checked_add(cd_size)
            .is_none_or(|end| end > eocd_pos)
        {
            return Err(bad("the central directory lies outside the archive"));
        }
        let mut cd = vec![0u8; cd_size as usize];
        file.read_exact_at(&mut cd, cd_offset)?;
        let mut dir = Directory {
            cd_offset,
            ..Directory::default()
        };
        let mut at = 0usize;
        for _ in 0..count {
            if at + 46 > cd.len() || u32_at(&cd, at) != CENTRAL {
                return Err(bad("a central-directory record is damaged"));
            }
            let name_len = usize::from(u16_at(&cd, at + 28));
            let end = at
                + 46
                + name_len
                + usize::from(u16_at(&cd, at + 30))
                + usize::from(u16_at(&cd, at + 32));
            if end > cd.len() {
                return Err(bad("a central-directory record is cut short"));
            }
            let name = cd[at + 46..at + 46 + name_len].to_vec();
            dir.insert(Entry {
                name,
                raw: cd[at..end].to_vec(),
            });
            at = end;
        }
        Ok(dir)
    }

    /// Writes the directory and its end records at `at` (where the directory starts
    /// from now on); returns where they end.
    pub fn write_at(&mut self, file: &mut File, at: u64) -> io::Result<u64> {
        self.cd_offset = at;
        file.seek(SeekFrom::Start(at))?;
        let mut out = BufWriter::with_capacity(1 << 20, &mut *file);
        let mut size = 0u64;
        for e in &self.entries {
            out.write_all(&e.raw)?;
            size += e.raw.len() as u64;
        }
        let count = self.entries.len() as u64;
        let zip64 = count >= 0xFFFF || size >= 0xFFFF_FFFF || at >= 0xFFFF_FFFF;
        if zip64 {
            let record = at + size;
            let mut z = Vec::with_capacity(76);
            z.extend_from_slice(&ZIP64_EOCD.to_le_bytes());
            z.extend_from_slice(&44u64.to_le_bytes());
            z.extend_from_slice(&0x031Eu16.to_le_bytes());
            z.extend_from_slice(&45u16.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&count.to_le_bytes());
            z.extend_from_slice(&count.to_le_bytes());
            z.extend_from_slice(&size.to_le_bytes());
            z.extend_from_slice(&at.to_le_bytes());
            z.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&record.to_le_bytes());
            z.extend_from_slice(&1u32.to_le_bytes());
            out.write_all(&z)?;
            size += z.len() as u64;
        }
        let small = |v: u64, max: u64| if zip64 { max } else { v };
        let mut e = Vec::with_capacity(22);
        e.extend_from_slice(&EOCD.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        let n = small(count, 0xFFFF) as u16;
        e.extend_from_slice(&n.to_le_bytes());
        e.extend_from_slice(&n.to_le_bytes());
        let cd_size: u64 = self.entries.iter().map(|e| e.raw.len() as u64).sum();
        e.extend_from_slice(&(small(cd_size, 0xFFFF_FFFF) as u32).to_le_bytes());
        e.extend_from_slice(&(small(at, 0xFFFF_FFFF) as u32).to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        out.write_all(&e)?;
        out.flush()?;
        Ok(at + size + e.len() as u64)
    }
}

/// DOS time and date (local fields read as UTC) for `t`; 1980-01-01 for earlier times.
fn dos_time(t: SystemTime) -> (u16, u16) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = stagehost_plugin_api::calendar::civil_from_days(days);
    if year < 1980 {
        return (0, (1 << 5) | 1);
    }
    let year = year.min(2107);
    let time = ((rem / 3600) << 11) | (((rem % 3600) / 60) << 5) | ((rem % 60) / 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    (time as u16, date as u16)
}

/// What to write as a member.
pub struct Member<'a> {
    pub name: &'a str,
    /// Permission bits, kept in the external attributes as Info-ZIP does.
    pub mode: u32,
    pub modified: SystemTime,
    /// The length the source has; reading a different length is an error.
    pub size: u64,
    pub deflate: bool,
}

/// Counts what passes through.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `member` from `source` at `at`: a local header, the data (deflated or
/// stored) and the header patched with the CRC and sizes. Returns its directory entry
/// and where it ends. `progress` hears the bytes read.
pub fn write_member(
    file: &mut File,
    at: u64,
    member: &Member<'_>,
    source: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(Entry, u64)> {
    let zip64 = member.size >= ZIP64_AT;
    let (time, date) = dos_time(member.modified);
    let method: u16 = if member.deflate { 8 } else { 0 };
    let needed: u16 = if zip64 { 45 } else { 20 };
    let name = member.name.as_bytes();
    let flags: u16 = 0x0800;
    let mut header = Vec::with_capacity(30 + name.len() + 20);
    header.extend_from_slice(&LOCAL.to_le_bytes());
    header.extend_from_slice(&needed.to_le_bytes());
    header.extend_from_slice(&flags.to_le_bytes());
    header.extend_from_slice(&method.to_le_bytes());
    header.extend_from_slice(&time.to_le_bytes());
    header.extend_from_slice(&date.to_le_bytes());
    header.extend_from_slice(&[0u8; 12]); // CRC and sizes, patched below
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
    header.extend_from_slice(name);
    if zip64 {
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&16u16.to_le_bytes());
        header.extend_from_slice(&[0u8; 16]);
    }
    file.seek(SeekFrom::Start(at))?;
    let data_at = at + header.len() as u64;
    let mut crc = flate2::Crc::new();
    let mut read = 0u64;
    let mut copy = |sink: &mut dyn Write| -> io::Result<()> {
        // Small members are the common case: buffers no larger than the member.
        let mut buf = vec![0u8; (member.size as usize).clamp(8 << 10, 256 << 10)];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            crc.update(&buf[..n]);
            sink.write_all(&buf[..n])?;
            read += n as u64;
            progress(read);
        }
    };
    let compressed = {
        let mut out = Counting {
            inner: BufWriter::with_capacity(
                (member.size as usize + header.len()).clamp(8 << 10, 1 << 20),
                &mut *file,
            ),
            written: 0,
        };
        out.inner.write_all(&header)?;
        if member.deflate {
            let mut encoder =
                flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::default());
            copy(&mut encoder)?;
            encoder.finish()?;
        } else {
            copy(&mut out)?;
        }
        out.flush()?;
        out.written
    };
    if read != member.size {
        return Err(bad(format!(
            "it changed while it was added ({read} bytes read, {} expected)",
            member.size
        )));
    }
    let end = data_at + compressed;
    // Patch the header.
    let mut patch = Vec::with_capacity(12);
    patch.extend_from_slice(&crc.sum().to_le_bytes());
    if zip64 {
        patch.extend_from_slice(&u32::MAX.to_le_bytes());
        patch.extend_from_slice(&u32::MAX.to_le_bytes());
        file.write_all_at(&patch, at + 14)?;
        let mut sizes = Vec::with_capacity(16);
        sizes.extend_from_slice(&read.to_le_bytes());
        sizes.extend_from_slice(&compressed.to_le_bytes());
        file.write_all_at(&sizes, at + 30 + name.len() as u64 + 4)?;
    } else {
        patch.extend_from_slice(&(compressed as u32).to_le_bytes());
        patch.extend_from_slice(&(read as u32).to_le_bytes());
        file.write_all_at(&patch, at + 14)?;
    }
    // The directory record.
    let far = at >= 0xFFFF_FFFF;
    let mut extra = Vec::new();
    if zip64 || far {
        let mut fields = Vec::new();
        if zip64 {
            fields.extend_from_slice(&read.to_le_bytes());
            fields.extend_from_slice(&compressed.to_le_bytes());
        }
        if far {
            fields.extend_from_slice(&at.to_le_bytes());
        }
        extra.extend_from_slice(&1u16.to_le_bytes());
        extra.extend_from_slice(&(fields.len() as u16).to_le_bytes());
        extra.extend_from_slice(&fields);
    }
    let mut raw = Vec::with_capacity(46 + name.len() + extra.len());
    raw.extend_from_slice(&CENTRAL.to_le_bytes());
    raw.extend_from_slice(&0x031Eu16.to_le_bytes()); // made by Unix, version 3.0
    raw.extend_from_slice(&(if zip64 || far { 45u16 } else { 20 }).to_le_bytes());
    raw.extend_from_slice(&flags.to_le_bytes());
    raw.extend_from_slice(&method.to_le_bytes());
    raw.extend_from_slice(&time.to_le_bytes());
    raw.extend_from_slice(&date.to_le_bytes());
    raw.extend_from_slice(&crc.sum().to_le_bytes());
    let size32 = |v: u64| if zip64 { u32::MAX } else { v as u32 };
    raw.extend_from_slice(&size32(compressed).to_le_bytes());
    raw.extend_from_slice(&size32(read).to_le_bytes());
    raw.extend_from_slice(&(name.len() as u16).to_le_bytes());
    raw.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    raw.extend_from_slice(&0u16.to_le_bytes()); // comment
    raw.extend_from_slice(&0u16.to_le_bytes()); // disk
    raw.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    raw.extend_from_slice(&((0o100_000 | (member.mode & 0o7777)) << 16).to_le_bytes());
    raw.extend_from_slice(&(if far { u32::MAX } else { at as u32 }).to_le_bytes());
    raw.extend_from_slice(name);
    raw.extend_from_slice(&extra);
    Ok((
        Entry {
            name: member.name.as_bytes().to_vec(),
            raw,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times() {
        // 2024-02-29 13:45:30 UTC
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_214_330);
        let (time, date) = dos_time(t);
        assert_eq!(date >> 9, 2024 - 1980);
        assert_eq!((date >> 5) & 15, 2);
        assert_eq!(date & 31, 29);
        assert_eq!(time >> 11, 13);
        assert_eq!((time >> 5) & 63, 45);
        assert_eq!((time & 31) * 2, 30);
        assert_eq!(dos_time(UNIX_EPOCH), (0, 33));
    }

    #[test]
    fn written_members_read_back_with_the_zip_crate() {
        let dir = std::env::temp_dir().join(format!("stagehost-zipfmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.zip");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut directory = Directory::default();
        let mut at = 0;
        for (i, deflate) in [(0, true), (1, false), (2, true)] {
            let data = format!("member {i}\n").repeat(100 * (i + 1));
            let member = Member {
                name: &format!("d/m{i}.txt"),
                mode: 0o640,
                modified: SystemTime::now(),
                size: data.len() as u64,
                deflate,
            };
            let (entry, end) =
                write_member(&mut file, at, &member, &mut data.as_bytes(), &mut |_| {}).unwrap();
            directory.insert(entry);
            at = end;
            let end = directory.write_at(&mut file, at).unwrap();
            file.set_len(end).unwrap();
            // Readable after every update, and the directory reads back.
            let again = Directory::read(&file, end).unwrap();
            assert_eq!(again.len(), i + 1);
            assert_eq!(again.cd_offset, at);
        }
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        for i in 0..3 {
            let mut m = archive.by_name(&format!("d/m{i}.txt")).unwrap();
            let mut text = String::new();
            m.read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("member {i}\n").repeat(100 * (i + 1)));
            assert_eq!(m.unix_mode(), Some(0o100640));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
