/work/main/rust/pcieoe/target/debug/deps/pcieoe-cee23e7100620370.d: src/lib.rs src/ethertype.rs

/work/main/rust/pcieoe/target/debug/deps/libpcieoe-cee23e7100620370.rlib: src/lib.rs src/ethertype.rs

/work/main/rust/pcieoe/target/debug/deps/libpcieoe-cee23e7100620370.rmeta: src/lib.rs src/ethertype.rs

src/lib.rs:
src/ethertype.rs:
