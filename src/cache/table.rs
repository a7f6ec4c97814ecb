//! The compact containers the read cache's index is built of, so that an entity costs little
//! more than its encoding (which holds its id): [`Packed`] (an entity's lookup keys in one
//! allocation, none for none),
//! [`Table`] (entities in a slab, found by id through a table of slot numbers that holds no
//! strings of its own) and [`Keys`] (a secondary index of key hashes to slot numbers, checked
//! against the entity's own packed keys).

use std::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, HashTable};

/// Tagged strings in one allocation: whatever an entity's kind needs to find it or answer
/// from it beyond its encoding (lookup keys, folded; a role's permissions, ...).
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `items` in order.
    pub fn new<'a>(items: impl IntoIterator<Item = (u8, &'a str)>) -> Packed {
        let mut out = Vec::new();
        for (tag, s) in items {
            out.push(tag);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Packed(out.into_boxed_slice())
    }

    /// Every item.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &str)> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (&tag, after) = rest.split_first()?;
            let (len, after) = after.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
            let (s, after) = after.split_at(len);
            rest = after;
            Some((tag, std::str::from_utf8(s).expect("packed from a str")))
        })
    }

    /// The items with `tag`.
    pub fn all(&self, tag: u8) -> impl Iterator<Item = &str> {
        self.iter().filter(move |(t, _)| *t == tag).map(|(_, s)| s)
    }

    /// The first item with `tag`.
    pub fn first(&self, tag: u8) -> Option<&str> {
        self.all(tag).next()
    }

    pub fn has(&self, tag: u8, value: &str) -> bool {
        self.all(tag).any(|s| s == value)
    }

    /// Bytes of its allocation.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a [`Table`] holds: something with an id.
pub trait Slot {
    fn id(&self) -> &str;
}

/// Entities by id: a slab of slots (reused when freed) and a hash table of their numbers (four
/// bytes a bucket: the id is the slot's own).
pub struct Table<S> {
    slots: Vec<Option<S>>,
    free: Vec<u32>,
    ids: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            ids: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

fn occupied<S>(slots: &[Option<S>], n: u32) -> &S {
    slots[n as usize].as_ref().expect("the table names only occupied slots")
}

impl<S: Slot> Table<S> {
    /// What the table's structure costs per entity held, beyond the slot's own heap: the slot,
    /// the bucket and its control byte.
    pub const PER_ENTITY: usize = std::mem::size_of::<Option<S>>() + std::mem::size_of::<u32>() + 1;

    fn find(&self, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.ids
            .find(self.hasher.hash_one(id), |&n| occupied(slots, n).id() == id)
            .copied()
    }

    pub fn get(&self, id: &str) -> Option<&S> {
        self.find(id).map(|n| self.at(n))
    }

    /// The slot numbered `n` (a number this table gave and has not taken back).
    pub fn at(&self, n: u32) -> &S {
        occupied(&self.slots, n)
    }

    /// Holds `slot` (its id must not be held) and gives its number.
    pub fn insert(&mut self, slot: S) -> u32 {
        debug_assert!(self.find(slot.id()).is_none(), "an id is held once");
        let hash = self.hasher.hash_one(slot.id());
        let n = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize] = Some(slot);
                n
            }
            None => {
                self.slots.push(Some(slot));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 entities of a kind")
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.ids
            .insert_unique(hash, n, |&m| hasher.hash_one(occupied(slots, m).id()));
        n
    }

    /// Takes out the entity `id`, with the number it had.
    pub fn remove(&mut self, id: &str) -> Option<(u32, S)> {
        let slots = &self.slots;
        let entry = self
            .ids
            .find_entry(self.hasher.hash_one(id), |&n| occupied(slots, n).id() == id)
            .ok()?;
        let (n, _) = entry.remove();
        let slot = self.slots[n as usize].take().expect("occupied");
        self.free.push(n);
        Some((n, slot))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Gives back the spare capacity of a load (the slab grew by doubling).
    pub fn shrink(&mut self) {
        // Free slots at the end can go; those in the middle keep their numbers.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        let len = self.slots.len();
        self.free.retain(|&n| (n as usize) < len);
        self.slots.shrink_to_fit();
        self.free.shrink_to_fit();
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.ids.shrink_to_fit(|&m| hasher.hash_one(occupied(slots, m).id()));
    }
}

/// A secondary index: key hashes to the numbers of the slots holding the key, several per key
/// if several hold it. It stores no key: a reader checks each candidate's own keys.
pub struct Keys {
    entries: HashTable<(u64, u32)>,
    hasher: DefaultHashBuilder,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            entries: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl Keys {
    /// What one key held costs: the entry, its control byte.
    pub const PER_KEY: usize = std::mem::size_of::<(u64, u32)>() + 1;

    pub fn hash(&self, key: impl Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn insert(&mut self, hash: u64, n: u32) {
        self.entries.insert_unique(hash, (hash, n), |e| e.0);
    }

    pub fn remove(&mut self, hash: u64, n: u32) {
        if let Ok(entry) = self.entries.find_entry(hash, |e| *e == (hash, n)) {
            entry.remove();
        }
    }

    /// The slots that may hold a key of `hash` (the caller checks which do).
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter_hash(hash).filter(move |e| e.0 == hash).map(|e| e.1)
    }

    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit(|e| e.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(String);

    impl Slot for Named {
        fn id(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn packed_gives_back_its_items_in_order() {
        let p = Packed::new([(1, "a@example.com"), (2, ""), (1, "b@example.com")]);
        assert_eq!(p.all(1).collect::<Vec<_>>(), ["a@example.com", "b@example.com"]);
        assert_eq!(p.first(2), Some(""));
        assert!(p.has(1, "b@example.com") && !p.has(2, "b@example.com"));
        assert_eq!(p.iter().count(), 3);
        assert!(Packed::new([]).is_empty());
    }

    #[test]
    fn a_table_finds_what_it_holds_and_reuses_freed_slots() {
        let mut t = Table::default();
        for i in 0..1000 {
            t.insert(Named(format!("id_{i}")));
        }
        assert_eq!(t.len(), 1000);
        let (n, _) = t.remove("id_7").unwrap();
        assert!(t.get("id_7").is_none() && t.remove("id_7").is_none());
        assert_eq!(t.insert(Named("id_x".into())), n);
        assert_eq!(t.get("id_x").unwrap().id(), "id_x");
        for i in (0..1000).filter(|i| *i != 7) {
            assert_eq!(t.get(&format!("id_{i}")).unwrap().id(), format!("id_{i}"));
        }
        for i in 500..1000 {
            t.remove(&format!("id_{i}"));
        }
        t.shrink();
        assert_eq!(t.len(), 500);
        assert!(t.get("id_499").is_some() && t.get("id_x").is_some() && t.get("id_500").is_none());
        t.insert(Named("id_y".into()));
        assert!(t.get("id_y").is_some());
    }

    #[test]
    fn keys_give_every_holder_of_a_hash_and_forget_one_removed() {
        let mut k = Keys::default();
        let h = k.hash("ada@example.com");
        k.insert(h, 1);
        k.insert(h, 2);
        k.insert(k.hash("bob@example.com"), 3);
        let mut got: Vec<u32> = k.candidates(h).collect();
        got.sort();
        assert_eq!(got, [1, 2]);
        k.remove(h, 1);
        assert_eq!(k.candidates(h).collect::<Vec<_>>(), [2]);
    }
}
