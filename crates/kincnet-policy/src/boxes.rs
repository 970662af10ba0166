//! Canonical disjoint decomposition of a union of 3-D boxes (peer address, protocol, port).
//!
//! nf_tables' concatenated interval sets (pipapo) reject an element whose start or end
//! falls inside an existing one, so a pod's allowed region must be written as disjoint
//! boxes. The decomposition is canonical (a function of the covered region only, not of
//! the rules that produced it): slice along the first axis at every box edge, decompose
//! each slice recursively, then merge neighbouring slices that decompose identically.
//! Canonical output is what makes diffs small: an unchanged region yields the same
//! elements whatever else changed.

/// Inclusive range. `u64` so that `hi + 1` never overflows for 32-bit addresses.
pub type Span = (u64, u64);
/// `[peer address, protocol, port]`, each inclusive.
pub type Box3 = [Span; 3];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    span: Span,
    children: Vec<Node>,
}

/// Disjoint boxes covering exactly the union of `boxes`, in ascending order.
pub fn canonical(boxes: &[Box3]) -> Vec<Box3> {
    let refs: Vec<&Box3> = boxes
        .iter()
        .filter(|b| b.iter().all(|s| s.0 <= s.1))
        .collect();
    let tree = build(&refs, 0);
    let mut out = Vec::new();
    for a in &tree {
        for b in &a.children {
            for c in &b.children {
                out.push([a.span, b.span, c.span]);
            }
        }
    }
    out
}

fn build(boxes: &[&Box3], dim: usize) -> Vec<Node> {
    if dim == 2 {
        let mut spans: Vec<Span> = boxes.iter().map(|b| b[dim]).collect();
        spans.sort_unstable();
        let mut out: Vec<Node> = Vec::new();
        for s in spans {
            match out.last_mut() {
                Some(last) if s.0 <= last.span.1 + 1 => last.span.1 = last.span.1.max(s.1),
                _ => out.push(Node {
                    span: s,
                    children: Vec::new(),
                }),
            }
        }
        return out;
    }
    let mut edges: Vec<u64> = boxes
        .iter()
        .flat_map(|b| [b[dim].0, b[dim].1 + 1])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let mut sorted: Vec<&Box3> = boxes.to_vec();
    sorted.sort_unstable_by_key(|b| b[dim].0);
    let mut next = 0;
    let mut active: Vec<&Box3> = Vec::new();
    let mut out: Vec<Node> = Vec::new();
    for w in edges.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        active.retain(|b| b[dim].1 >= lo);
        while next < sorted.len() && sorted[next][dim].0 <= lo {
            active.push(sorted[next]);
            next += 1;
        }
        if active.is_empty() {
            continue;
        }
        let children = build(&active, dim + 1);
        match out.last_mut() {
            Some(last) if last.span.1 + 1 == lo && last.children == children => last.span.1 = hi,
            _ => out.push(Node {
                span: (lo, hi),
                children,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PROTO: Span = (0, 255);
    const ALL_PORT: Span = (0, 65535);

    fn covers(boxes: &[Box3], p: [u64; 3]) -> bool {
        boxes
            .iter()
            .any(|b| (0..3).all(|d| b[d].0 <= p[d] && p[d] <= b[d].1))
    }

    fn disjoint(boxes: &[Box3]) -> bool {
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                if (0..3).all(|d| a[d].0 <= b[d].1 && b[d].0 <= a[d].1) {
                    return false;
                }
            }
        }
        true
    }

    #[test]
    fn overlapping_rules_become_disjoint_and_cover_the_same_points() {
        let input = vec![
            [(10, 20), (6, 6), (80, 80)],
            [(15, 30), (6, 6), (70, 90)],
            [(0, u32::MAX as u64), (17, 17), (53, 53)],
            [(12, 12), ALL_PROTO, ALL_PORT],
        ];
        let out = canonical(&input);
        assert!(disjoint(&out), "{out:?}");
        for peer in [0, 9, 10, 12, 14, 15, 20, 25, 30, 31, u32::MAX as u64] {
            for proto in [1, 6, 17, 132] {
                for port in [0, 53, 69, 70, 80, 85, 90, 91, 65535] {
                    let p = [peer, proto, port];
                    assert_eq!(covers(&out, p), covers(&input, p), "point {p:?}");
                }
            }
        }
    }

    #[test]
    fn decomposition_is_canonical() {
        // Same region written two ways.
        let a = canonical(&[[(1, 10), (6, 6), (80, 80)]]);
        let b = canonical(&[
            [(1, 4), (6, 6), (80, 80)],
            [(5, 10), (6, 6), (80, 80)],
            [(3, 7), (6, 6), (80, 80)],
        ]);
        assert_eq!(a, b);
        assert_eq!(a, vec![[(1, 10), (6, 6), (80, 80)]]);
    }

    #[test]
    fn adjacent_peers_with_the_same_ports_merge() {
        let out = canonical(&[
            [(5, 5), (6, 6), (80, 80)],
            [(6, 6), (6, 6), (80, 80)],
            [(8, 8), (6, 6), (80, 80)],
        ]);
        assert_eq!(
            out,
            vec![[(5, 6), (6, 6), (80, 80)], [(8, 8), (6, 6), (80, 80)]]
        );
    }

    #[test]
    fn full_space_and_empty_input() {
        assert!(canonical(&[]).is_empty());
        let all = [(0, u32::MAX as u64), ALL_PROTO, ALL_PORT];
        assert_eq!(canonical(&[all, [(3, 3), (6, 6), (1, 1)]]), vec![all]);
    }
}
