//! A minimal ustar writer: regular files only, which is all `debug dump` needs.

use std::io::{self, Write};

const BLOCK: usize = 512;

/// Writes regular files into a tar stream; `finish` writes the end-of-archive blocks.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Appends one file. `path` is relative, `/`-separated, ASCII, at most 255 bytes with no
    /// component over 100 bytes.
    pub fn append(&mut self, path: &str, data: &[u8], mode: u32, mtime: u64) -> io::Result<()> {
        let header = header(path, data.len() as u64, mode, mtime)?;
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the two zero blocks that end an archive and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Writes `value` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) -> io::Result<()> {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return Err(invalid(format!("{value} does not fit a tar header field")));
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

fn header(path: &str, size: u64, mode: u32, mtime: u64) -> io::Result<[u8; BLOCK]> {
    if !path.is_ascii() || path.is_empty() || path.starts_with('/') || path.contains('\0') {
        return Err(invalid(format!("{path:?} cannot be stored in the archive")));
    }
    // ustar splits long paths into a prefix (155) and a name (100) at a '/'.
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        let split = path[..path.len().min(156)]
            .rfind('/')
            .filter(|&i| path.len() - i - 1 <= 100 && i <= 155)
            .ok_or_else(|| invalid(format!("{path:?} is too long for the archive")))?;
        (&path[..split], &path[split + 1..])
    };
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode & 0o7777))?;
    octal(&mut h[108..116], 0)?; // uid
    octal(&mut h[116..124], 0)?; // gid
    octal(&mut h[124..136], size)?;
    octal(&mut h[136..148], mtime)?;
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_file() {
        let mut t = TarWriter::new(Vec::new());
        t.append("d/hello.txt", b"hello", 0o644, 1_700_000_000)
            .unwrap();
        let bytes = t.finish().unwrap();
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        assert_eq!(&bytes[..11], b"d/hello.txt");
        assert_eq!(&bytes[124..136], b"00000000005\0");
        assert_eq!(&bytes[257..263], b"ustar\0");
        assert_eq!(&bytes[512..517], b"hello");
        // Checksum: sum of the header with the checksum field as spaces.
        let mut h = bytes[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn long_paths_use_the_prefix() {
        let dir = "a".repeat(120);
        let path = format!("{dir}/file.log");
        let h = header(&path, 0, 0o644, 0).unwrap();
        assert_eq!(&h[..8], b"file.log");
        assert_eq!(&h[345..465], dir.as_bytes());
        assert!(header(&"b".repeat(300), 0, 0o644, 0).is_err());
        assert!(header("/abs", 0, 0o644, 0).is_err());
    }

    #[test]
    fn system_tar_reads_it() {
        let Ok(tar) = which("tar") else { return };
        let dir = std::env::temp_dir().join(format!("skupper-tar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.tar");
        let mut t = TarWriter::new(std::fs::File::create(&file).unwrap());
        t.append("x/a.txt", b"alpha\n", 0o600, 0).unwrap();
        t.append("x/b.txt", &vec![b'b'; 1500], 0o644, 0).unwrap();
        t.finish().unwrap();
        let out = std::process::Command::new(tar)
            .arg("-tvf")
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(list.contains("x/a.txt") && list.contains("1500"), "{list}");
    }

    fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(cmd))
                    .find(|p| p.is_file())
            })
            .ok_or(())
    }
}
