//! Maps the request path looks things up in: ids, names and key digests, several per
//! request. foldhash with a per-process random seed costs a fraction of the standard SipHash
//! on such keys, which all come from the control plane's snapshot (a client's virtual key is
//! looked up by its SHA-256, which no client can steer).

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
