//! Stop strings: text is held back while it could still be the start of a stop string, so a stop
//! string is never sent to a client, even when it spans several tokens.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What to send after a piece of text arrived.
#[derive(Debug, PartialEq, Eq)]
pub struct StopStep {
    pub emit: String,
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stops.is_empty() {
            return StopStep { emit: text.to_string(), stopped: false };
        }
        self.held.push_str(text);
        let first_match = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_match {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopStep { emit, stopped: true };
        }
        let keep = self.longest_suffix_that_starts_a_stop();
        let emit = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        StopStep { emit, stopped: false }
    }

    /// The text still held back, for when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn longest_suffix_that_starts_a_stop(&self) -> usize {
        let h = &self.held;
        h.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&h[i..])))
            .map_or(0, |i| h.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let step = m.push(p);
            out += &step.emit;
            if step.stopped {
                return (out, true);
            }
        }
        out += &m.flush();
        (out, false)
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["END"], &["abcENDdef"]), ("abc".into(), true));
    }

    #[test]
    fn stop_spanning_pieces_is_never_emitted() {
        let mut m = StopMatcher::new(vec!["Paris".into()]);
        assert_eq!(m.push("The capital is Pa").emit, "The capital is ");
        assert_eq!(m.push("r").emit, "");
        assert_eq!(m.push("is."), StopStep { emit: String::new(), stopped: true });
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(run(&["Paris"], &["Pa", "ris"]), ("".into(), true));
        assert_eq!(run(&["Paris"], &["Pa", "rty"]), ("Party".into(), false));
        assert_eq!(run(&["\n\n"], &["a\n", "b\n"]), ("a\nb\n".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(run(&["c", "b"], &["xabc"]), ("xa".into(), true));
        assert_eq!(run(&["é!"], &["café", " ok"]), ("café ok".into(), false));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
    }

    #[test]
    fn no_stops_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
