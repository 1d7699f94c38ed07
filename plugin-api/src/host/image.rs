//! Whether a plugin file is a complete library image, checked before the dynamic loader maps it.
//!
//! The loader maps each loadable segment of the file; a segment that reaches past the end of a
//! truncated file is mapped anyway, and the first access to it kills the process with SIGBUS
//! (a 4 KiB or 64 KiB prefix of a real plugin did exactly that, with nothing logged). So the
//! file is parsed first (the `object` crate: ELF, Mach-O, PE) and refused unless every segment
//! and section it names lies inside it.

use std::fs::File;
use std::io::Read;

use object::{Object, ObjectSection, ObjectSegment};

/// Largest plugin file read for the check, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// Reads `file` (from its start) and checks it is a complete library image.
///
/// # Errors
/// One line: `refused: …` with what is wrong.
pub fn check(file: &File) -> Result<(), String> {
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if len > MAX_IMAGE_BYTES {
        return Err(format!(
            "refused: {len} bytes is larger than a plugin may be ({} MiB)",
            MAX_IMAGE_BYTES >> 20
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    check_bytes(&data)
}

/// The check on a file's bytes.
///
/// # Errors
/// As [`check`].
pub fn check_bytes(data: &[u8]) -> Result<(), String> {
    let size = data.len() as u64;
    let parsed = object::File::parse(data)
        .map_err(|e| format!("refused: not a complete library file ({e})"))?;
    for segment in parsed.segments() {
        let (offset, len) = segment.file_range();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(format!(
                "refused: truncated: a segment needs bytes {offset}..{} of a {size}-byte file",
                offset.saturating_add(len)
            ));
        }
    }
    for section in parsed.sections() {
        if let Some((offset, len)) = section.file_range()
            && offset.checked_add(len).is_none_or(|end| end > size)
        {
            return Err(format!(
                "refused: truncated: section {} needs bytes {offset}..{} of a {size}-byte file",
                section.name().unwrap_or("?"),
                offset.saturating_add(len)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_files_are_refused() {
        for bytes in [
            &b""[..],
            b"not an ELF file",
            &[0x7f, b'E', b'L', b'F', 2, 1, 1],
        ] {
            let e = check_bytes(bytes).unwrap_err();
            assert!(e.starts_with("refused: not a complete library file"), "{e}");
        }
    }

    #[test]
    fn the_running_test_binary_is_complete_and_its_prefixes_are_not() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        check_bytes(&me).unwrap();
        // A PE file may end in a COFF symbol table no section covers (the loader never maps
        // it), so its last byte is not a section's; an ELF file's is.
        let last = if cfg!(windows) {
            me.len() / 2
        } else {
            me.len() - 1
        };
        for cut in [4 << 10, 64 << 10, me.len() / 2, last] {
            let e = check_bytes(&me[..cut]).unwrap_err();
            assert!(e.starts_with("refused:"), "{cut}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
