//! Netlink attribute (TLV) writer and reader.
//!
//! Layout (`linux/netlink.h`): `struct nlattr { u16 nla_len; u16 nla_type; }` in host byte
//! order, then the payload, then padding to a 4-byte boundary (`NLA_ALIGNTO`). `nla_len`
//! counts header + payload, not the padding. nf_tables puts integers in network byte order
//! (the kernel reads them with `nla_get_be32`/`be64`), strings NUL-terminated.

use super::consts::{NLA_F_NESTED, NLA_TYPE_MASK};

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends attributes to a message buffer.
#[derive(Debug, Default, Clone)]
pub struct AttrWriter {
    pub(crate) buf: Vec<u8>,
}

impl AttrWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        assert!(len <= u16::MAX as usize, "netlink attribute too long");
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v)
    }

    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    pub fn be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    pub fn u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.bytes(ty, &[v])
    }

    /// A nested attribute whose contents `f` writes.
    pub fn nested(&mut self, ty: u16, f: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        let mut inner = AttrWriter {
            buf: std::mem::take(&mut self.buf),
        };
        f(&mut inner);
        self.buf = inner.buf;
        let len = self.buf.len() - start;
        assert!(
            len <= u16::MAX as usize,
            "nested netlink attribute too long"
        );
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }
}

/// One attribute seen by [`Attrs`].
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn nested(&self) -> Attrs<'a> {
        Attrs { rest: self.data }
    }

    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.get(..4)?.try_into().ok()?))
    }

    pub fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.data.get(..8)?.try_into().ok()?))
    }

    /// A NUL-terminated (or unterminated) string; lossy on bad UTF-8.
    pub fn string(&self) -> String {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }
}

/// Iterates over the attributes in a buffer; stops at the first malformed one.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The first attribute of type `ty`.
    pub fn find(&self, ty: u16) -> Option<Attr<'a>> {
        Iterator::find(&mut self.clone(), |a: &Attr<'a>| a.ty == ty)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &self.rest[4..len];
        self.rest = &self.rest[align4(len).min(self.rest.len())..];
        Some(Attr { ty, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_attr_is_nul_terminated_and_padded() {
        let mut w = AttrWriter::new();
        w.str(1, "ip");
        // len 4+3=7 (header + "ip\0"), type 1, then one pad byte.
        assert_eq!(w.into_bytes(), [7, 0, 1, 0, b'i', b'p', 0, 0]);
    }

    #[test]
    fn be32_is_network_order() {
        let mut w = AttrWriter::new();
        w.be32(3, 0x0102_0304);
        assert_eq!(w.into_bytes(), [8, 0, 3, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn nested_sets_flag_and_total_length() {
        let mut w = AttrWriter::new();
        w.nested(4, |n| {
            n.be32(1, 0);
            n.be32(2, 0xffff_ff9c); // priority -100
        });
        assert_eq!(
            w.into_bytes(),
            [
                20, 0, 4, 0x80, // nla_len 20, NFTA_CHAIN_HOOK | NLA_F_NESTED
                8, 0, 1, 0, 0, 0, 0, 0, // NFTA_HOOK_HOOKNUM = NF_INET_PRE_ROUTING
                8, 0, 2, 0, 0xff, 0xff, 0xff, 0x9c, // NFTA_HOOK_PRIORITY = -100
            ]
        );
    }

    #[test]
    fn reader_round_trips_and_strips_nested_flag() {
        let mut w = AttrWriter::new();
        w.str(1, "kinc").nested(2, |n| {
            n.be64(3, 7);
        });
        let buf = w.into_bytes();
        let attrs: Vec<_> = Attrs::new(&buf).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].string(), "kinc");
        assert_eq!(attrs[1].ty, 2);
        assert_eq!(attrs[1].nested().find(3).and_then(|a| a.be64()), Some(7));
    }

    #[test]
    fn reader_stops_on_truncated_input() {
        let buf = [200u8, 0, 1, 0, 1, 2];
        assert_eq!(Attrs::new(&buf).count(), 0);
    }
}
