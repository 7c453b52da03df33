//! Recognising a stream by its first bytes without losing them: `device receive` (bundle or
//! frames?) and `inspect` (which narlink file?) both start here.

use std::io::{self, Read};

/// A reader that gives back the bytes [`peek_magic`] looked at, then the rest.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The first 8 bytes of `r` (zero-filled if it is shorter), and a reader of all of it.
pub fn peek_magic<R: Read>(mut r: R) -> io::Result<([u8; 8], Peeked<R>)> {
    let mut magic = [0u8; 8];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((magic, io::Cursor::new(magic[..n].to_vec()).chain(r)))
}
