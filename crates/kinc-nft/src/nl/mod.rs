//! A typed nf_tables netlink layer: objects, rule expressions, and a socket that applies
//! a list of changes as one transaction.
//!
//! ```no_run
//! use kinc_nft::nl::*;
//! let t = Table { family: Family::Ip, name: "demo".into() };
//! let mut sock = Socket::open()?;
//! sock.commit(&[t.add_msg()], None)?;
//! # Ok::<(), kinc_nft::nl::Error>(())
//! ```

mod attr;
pub mod consts;
mod error;
mod expr;
mod msg;
mod socket;

pub use attr::{Attr, AttrWriter, Attrs};
pub use error::Error;
pub use expr::{reg, CmpOp, CtDir, CtKey, Expr, MetaKey, NatType, PayloadBase, Verdict};
pub use msg::{
    concat_len, concat_type, decode_chain, decode_elems, dump_chains_msg, get_table_msg, BaseChain,
    Chain, ChainType, Elem, Family, Hook, Msg, Rule, Set, Table,
};
pub use socket::{Reply, Socket};

use consts::{NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSETELEM};

impl Socket {
    /// Every rule of `table` (optionally of one chain), in chain order.
    pub fn list_rules(
        &mut self,
        family: Family,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Vec<Rule>, Error> {
        let replies = self.request(&Rule::dump_msg(family, table, chain))?;
        Ok(replies
            .iter()
            .filter(|r| r.kind == NFT_MSG_NEWRULE)
            .map(|r| Rule::decode(family, r.attrs()))
            .filter(|r| r.table == table)
            .collect())
    }

    /// Names of the chains of `table`, with whether each is a base chain.
    pub fn list_chains(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<Vec<(String, bool)>, Error> {
        let replies = self.request(&dump_chains_msg(family, table))?;
        Ok(replies
            .iter()
            .filter(|r| r.kind == NFT_MSG_NEWCHAIN)
            .filter_map(|r| decode_chain(r.attrs(), table))
            .collect())
    }

    /// Every element of a set or map.
    pub fn list_elems(&mut self, set: &Set) -> Result<Vec<Elem>, Error> {
        let replies = self.request(&set.dump_elems_msg())?;
        Ok(replies
            .iter()
            .filter(|r| r.kind == NFT_MSG_NEWSETELEM)
            .flat_map(|r| decode_elems(r.attrs()))
            .collect())
    }

    /// The element stored under `key` (with its data), or `None` if absent.
    pub fn get_elem(&mut self, set: &Set, key: &[u8]) -> Result<Option<Elem>, Error> {
        let probe = Elem {
            key: key.to_vec(),
            data: None,
        };
        match self.request(&set.get_elems_msg(&[probe])) {
            Ok(replies) => Ok(replies
                .iter()
                .filter(|r| r.kind == NFT_MSG_NEWSETELEM)
                .flat_map(|r| decode_elems(r.attrs()))
                .next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `table` exists.
    pub fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, Error> {
        match self.request(&get_table_msg(family, table)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
