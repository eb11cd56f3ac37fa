//! The nodes view: the members of a cluster (`GET /api/v1/cluster`), the partitions each
//! consumes, its lag, and who evaluates the alert rules.

use lookout_proto::api::ClusterResponse;

use super::list::Selection;

/// State of the nodes view.
#[derive(Debug, Default)]
pub struct NodesState {
    /// Latest answer.
    pub data: Option<ClusterResponse>,
    /// Latest error that was not the collector being unreachable.
    pub error: Option<String>,
    /// Selected member.
    pub sel: Selection,
}

impl NodesState {
    /// Take an answer, keeping the selection on the same row when it still exists.
    pub fn set_data(&mut self, d: ClusterResponse) {
        let n = d.members.len();
        self.data = Some(d);
        let i = self.sel.selected();
        self.sel.select(i, n);
        self.error = None;
    }
}

/// Partition numbers as ranges: `[0, 1, 2, 5, 7, 8]` is `0-2,5,7-8`.
pub fn ranges(partitions: &[u32]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn partitions_are_written_as_ranges() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(ranges(&[8, 0, 1, 2, 5, 7]), "0-2,5,7-8");
        assert_eq!(ranges(&[1, 1, 2]), "1-2");
    }
}
