//! What a held entity costs in memory, as the index accounts it (its budget): each allocation's
//! bytes plus the allocator's overhead. The containers' own costs per entry are theirs
//! (`table::Table::PER_ENTITY`, `table::Keys::PER_KEY`); `bench lookup` compares the total with
//! the server's RSS.

use std::mem::size_of;

/// Bytes a heap allocation costs beyond its contents (the allocator's header, rounding).
const ALLOCATION: usize = 16;

/// A boxed slice of `len` bytes.
pub fn boxed(len: usize) -> usize {
    if len == 0 { 0 } else { len + ALLOCATION }
}

/// An encoded message of `len` bytes held as `bytes::Bytes`: its buffer, and the shared header
/// the first clone of it allocates (`Bytes` made from a `Vec` shares it lazily).
pub fn encoded(len: usize) -> usize {
    boxed(len) + 4 * size_of::<usize>() + ALLOCATION
}

/// One entry of a hash map keyed by a string (the key's bytes, the slot, the control byte).
pub fn slot(key: &str, value_size: usize) -> usize {
    boxed(key.len()) + size_of::<String>() + value_size + 1
}
