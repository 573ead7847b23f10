//! How many (partition, slot) places move when one node joins or leaves, against the fair
//! share, for a few network shapes (256 partitions x 6 slots, equal capacities).
//!
//! cargo run --release -p medley-bench --bin layout_moves

use medley_core::{Layout, Member};

fn main() -> anyhow::Result<()> {
    let (partitions, slots) = (256u16, 6u8);
    let total = f64::from(partitions) * f64::from(slots);
    println!(
        "{:>6} | {:>7} | {:>11} | {:>10} | {:>11} | {:>9}",
        "nodes", "regions", "join moved", "fair share", "leave moved", "it held"
    );
    for (n, regions) in [(8usize, 1usize), (8, 3), (20, 4), (40, 4), (100, 5)] {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                id: format!("n{i}"),
                region: format!("r{}", i % regions),
                capacity: 1 << 40,
            })
            .collect();
        let before = Layout::compute(None, &members, partitions, slots)?;
        let mut joined = members.clone();
        joined.push(Member {
            id: "new".into(),
            region: "r0".into(),
            capacity: 1 << 40,
        });
        let join = before.moved_slots(&Layout::compute(Some(&before), &joined, partitions, slots)?);
        let mut left = members.clone();
        let gone = left.remove(3).id;
        let held = before.load().get(gone.as_str()).copied().unwrap_or(0);
        let leave = before.moved_slots(&Layout::compute(Some(&before), &left, partitions, slots)?);
        println!(
            "{n:>6} | {regions:>7} | {join:>11} | {:>10.0} | {leave:>11} | {held:>9}",
            total / (n + 1) as f64
        );
    }
    Ok(())
}
