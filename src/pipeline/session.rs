//! The embedding cache of an interactive session: a viewer encodes a frame once and then
//! answers every prompt change on it with a decode only.

use crate::model::Embedding;

use super::Preprocessed;

/// Least-recently-used cache of `(preprocessed frame, embedding)` by a caller's key
/// (e.g. image id and frame number). Embeddings live on the model's device (4 MiB
/// each in f32), so the capacity stays small.
pub struct EmbeddingCache<K> {
    capacity: usize,
    /// Most recently used last.
    entries: Vec<(K, Preprocessed, Embedding)>,
}

impl<K: PartialEq> EmbeddingCache<K> {
    /// A cache holding at most `capacity` embeddings (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Vec::new(),
        }
    }

    /// The cached entry for `key`, marked as most recently used.
    pub fn get(&mut self, key: &K) -> Option<(&Preprocessed, &Embedding)> {
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        let entry = self.entries.remove(i);
        self.entries.push(entry);
        self.entries.last().map(|(_, p, e)| (p, e))
    }

    /// Insert (or replace) the entry for `key`, evicting the least recently used one.
    pub fn insert(&mut self, key: K, pre: Preprocessed, emb: Embedding) {
        self.entries.retain(|(k, _, _)| *k != key);
        if self.entries.len() == self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, pre, emb));
    }

    /// Drop the entry for `key`, if any.
    pub fn remove(&mut self, key: &K) {
        self.entries.retain(|(k, _, _)| k != key);
    }

    /// Whether `key` is cached (without touching the order).
    pub fn contains(&self, key: &K) -> bool {
        self.entries.iter().any(|(k, _, _)| k == key)
    }

    /// Number of cached embeddings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop every entry (e.g. when the device or the model changes).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor};

    fn entry(rows: usize) -> (Preprocessed, Embedding) {
        let pre = Preprocessed {
            pixels: Vec::new(),
            rows,
            cols: rows,
            new_rows: rows,
            new_cols: rows,
            scale: 1.0,
            clip: None,
            warnings: Vec::new(),
        };
        let emb = Embedding {
            tensor: Tensor::<4>::zeros([1, 1, 1, 1], &Device::flex()),
            image_pe: None,
        };
        (pre, emb)
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = EmbeddingCache::new(2);
        for k in [1u32, 2] {
            let (p, e) = entry(k as usize);
            cache.insert(k, p, e);
        }
        // Touch 1, so 2 is the least recently used when 3 arrives.
        assert_eq!(cache.get(&1).map(|(p, _)| p.rows), Some(1));
        let (p, e) = entry(3);
        cache.insert(3, p, e);
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(&1) && cache.contains(&3) && !cache.contains(&2));
        // Replacing a key keeps one entry for it.
        let (p, e) = entry(30);
        cache.insert(3, p, e);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&3).map(|(p, _)| p.rows), Some(30));
        cache.remove(&3);
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty() && cache.get(&1).is_none());
    }
}
