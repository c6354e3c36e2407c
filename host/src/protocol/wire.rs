//! Big-endian field access shared by the codec files.

/// Reads a big-endian integer at a fixed position of a buffer whose length the caller knows.
macro_rules! fixed_readers {
    ($($name:ident -> $ty:ty),*) => {$(
        pub(super) fn $name(bytes: &[u8], at: usize) -> $ty {
            const LEN: usize = std::mem::size_of::<$ty>();
            let mut field = [0; LEN];
            field.copy_from_slice(&bytes[at..at + LEN]);
            <$ty>::from_be_bytes(field)
        }
    )*};
}
fixed_readers!(u16_at -> u16, u32_at -> u32, u64_at -> u64);

/// Joins big-endian fields into a fixed-size message without allocating.
/// The parts must add up to exactly `N` bytes.
pub(super) fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0; N];
    let mut len = 0;
    for part in parts {
        out[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    assert_eq!(len, N, "message parts do not fill the message");
    out
}

/// The 32-bit length field for a payload the server built; its size is bounded by
/// construction, so overflowing the field is a bug.
pub(super) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("payload length exceeds a 32-bit length field")
}

/// Walks a variable-length payload; every read reports `None` past its end.
pub(super) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    pub(super) fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(taken)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32_at(b, 0))
    }

    /// A 32-bit length followed by that many bytes.
    pub(super) fn length_prefixed(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.bytes(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_readers_are_big_endian() {
        let bytes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&bytes, 1), 0x0102);
        assert_eq!(u32_at(&bytes, 2), 0x0203_0405);
        assert_eq!(u64_at(&bytes, 2), 0x0203_0405_0607_0809);
    }

    #[test]
    fn concat_fills_in_order() {
        let joined: [u8; 6] = concat(&[&0x0102u16.to_be_bytes(), &0x0304_0506u32.to_be_bytes()]);
        assert_eq!(joined, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    #[should_panic(expected = "do not fill")]
    fn concat_rejects_short_parts() {
        let _: [u8; 3] = concat(&[&[1, 2]]);
    }

    #[test]
    fn cursor_stops_at_the_end() {
        let mut cursor = Cursor::new(&[0, 0, 0, 2, b'h', b'i', 9]);
        assert_eq!(cursor.u32(), Some(2));
        assert_eq!(cursor.bytes(2), Some(&b"hi"[..]));
        assert_eq!(cursor.u32(), None);
        assert_eq!(cursor.bytes(1), Some(&[9][..]));
    }
}
