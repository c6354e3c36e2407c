//! The built-in `limit` filter: with `limit=N` clients connected, the next is refused; once
//! one leaves, a new one gets in (nbdkit's limit filter, counted over all instances).

use crate::support::*;

const HOLD: &str = r#"
import nbd, os
def connect():
    g = nbd.NBD()
    try:
        g.connect_uri(os.environ["uri"])
        return g
    except nbd.Error:
        return None
held = [connect() for _ in range(LIMIT + 1)]
print("connected", sum(g is not None for g in held))
for g in held:
    if g is not None:
        g.shutdown()
        break
g = None
import time
for _ in range(100):
    g = connect()
    if g is not None:
        break
    time.sleep(0.05)
print("after", g is not None)
"#;

#[test]
fn clients_beyond_the_limit_are_refused() {
    let dir = TempDir::new("limit");
    let (img, _) = disk(&dir, "d.img", 66, 1 << 20);
    // nbdsh's own connection counts too: with limit=L, L-1 more get in.
    for limit in [2u32, 3] {
        let py = HOLD.replace("LIMIT", &(limit - 1).to_string());
        let arg = format!("limit={limit}");
        let script = format!("export uri; {}", nbdsh(&dir, "l", &py));
        let out = same_as_nbdkit(&["--filter=limit", "file", &img, &arg], &script);
        assert_eq!(value(&out, "connected"), (limit - 1).to_string(), "{out}");
        assert_eq!(value(&out, "after"), "True", "{out}");
    }
}
