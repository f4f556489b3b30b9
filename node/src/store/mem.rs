//! A store in memory: for the simulator, for unit tests, and for a node given no data dir.
//! It keeps the bytes a [`super::SledStore`] would (the encoding is shared), and like sled
//! it can lose what was not flushed: [`MemStore::crash`].

use super::{Store, StoreError, Tree};
use std::collections::BTreeMap;

type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Clone, Default)]
pub struct MemStore {
    trees: Trees,
    /// The trees as of the last flush.
    durable: Trees,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// What a `kill -9` leaves: the writes since the last flush are lost.
    pub fn crash(&mut self) {
        self.trees = self.durable.clone();
    }
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees.get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn insert(&mut self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.trees.entry(tree).or_default().insert(key.to_vec(), value);
        Ok(())
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        if let Some(t) = self.trees.get_mut(&tree) {
            t.remove(key);
        }
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let Some(t) = self.trees.get(&tree) else { return Ok(Vec::new()) };
        let from = t.range(prefix.to_vec()..);
        Ok(from.take_while(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.durable = self.trees.clone();
        Ok(())
    }
}
