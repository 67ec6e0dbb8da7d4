//! `--shard I/N`: which samples a run takes, by a stable hash of their key.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Shard `index` of `count`: the samples whose `xxh3_64(key) % count == index` (XXH3, 64 bits,
/// seed 0, of the key's UTF-8 bytes: `xxhash.xxh3_64_intdigest(key.encode()) % count` in
/// Python). `0/1` is the whole collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole collection.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the sample with this key belongs to this shard.
    pub fn contains(&self, key: &str) -> bool {
        self.count <= 1
            || xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(self.count)
                == u64::from(self.index)
    }

    /// The prefix of this shard's partition names (empty for the whole collection), so that
    /// shards running at once never write the same names.
    pub fn tag(&self) -> String {
        if self.count <= 1 {
            String::new()
        } else {
            format!("s{:03}of{:03}-", self.index, self.count)
        }
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Shard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_split_keys_exactly_once() {
        let keys: Vec<String> = (0..1000).map(|i| format!("dir/{i:05}.jpg")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for k in &keys {
            assert_eq!(shards.iter().filter(|s| s.contains(k)).count(), 1);
            assert!(Shard::ALL.contains(k));
        }
        // Each shard gets a fair share.
        for s in &shards {
            let n = keys.iter().filter(|k| s.contains(k)).count();
            assert!((250..420).contains(&n), "{s}: {n}");
        }
    }

    #[test]
    fn parse_checks_the_range() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Shard::ALL.tag(), "");
        assert_eq!(Shard { index: 1, count: 8 }.tag(), "s001of008-");
    }
}
