// SPDX-License-Identifier: GPL-2.0

//! Fault rules: which requests get a bad answer, and which.
//!
//! A rule is `TYPE[@N]:ACTION[+good][:COUNT[:SKIP]]`: requests of `TYPE` (a
//! request name such as `IN_SYNC`, or `any`; with `@N`, only those carrying
//! at least `N` regions), after the first `SKIP` of them, get `ACTION`,
//! `COUNT` times (0 or absent: always). With `+good`, the normal answer
//! follows the spoilt one at once.

use ulog_proto::wire::RequestType;

/// What to do instead of a normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer normally, but only after this many milliseconds.
    Late(u64),
    /// Ack-only reply with `EAGAIN` (the kernel resends).
    Eagain,
    /// Full reply whose `error` is `-EAGAIN`.
    EagainReply,
    /// Ack-only reply with errno 0: success without the reply data.
    AckOnly,
    /// Ack-only reply with this positive errno.
    AckError(u32),
    /// Full reply with `error = -N`.
    Error(i32),
    /// Full reply with 64 bytes more data than the request calls for.
    TooMuch,
    /// Full reply with 4 bytes less data than the normal answer.
    Short,
    /// Full reply whose first 8 bytes of data are this value (an answer
    /// the request cannot have, e.g. 2 for a flag).
    Value(i64),
    /// Full reply whose second 8 bytes of data are this value (e.g. a
    /// GET_RESYNC_WORK region beyond the log).
    Value2(i64),
    /// Full reply whose `data_size` claims 100 bytes more than it carries.
    BadDataSize,
    /// A message of 100 bytes: shorter than a request header.
    Truncated,
    /// Full reply naming another luid (the kernel must ignore it).
    WrongLuid,
    /// Full reply naming another uuid (the kernel must ignore it).
    WrongUuid,
    /// Full reply with another request type (the kernel must ignore it).
    WrongType,
    /// Full reply whose `cn_msg.len` covers the header only, the data cut
    /// off (the kernel must ignore it).
    ShortCnLen,
    /// The normal reply, sent twice (the second finds no waiter).
    Duplicate,
    /// The normal reply with `luid` 0, as cmirrord answers every request it
    /// routes through the cluster (the kernel must take it).
    LuidZero,
    /// The normal reply with a flag above the type's 8 bits, as cmirrord
    /// sets inside the cluster (the kernel must take it).
    TypeFlag,
    /// The normal answer with bytes that are no text (a status line with a
    /// newline, a NUL and 0xff in it).
    Garbage,
    /// No reply at all.
    Drop,
    /// Exit at once without replying, as a crashed server would.
    Exit,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    kind: Option<RequestType>,
    min_regions: usize,
    action: Action,
    then_good: bool,
    count: u64,
    skip: u64,
    seen: u64,
    applied: u64,
}

impl Rule {
    /// Parses `TYPE[@N]:ACTION[:COUNT[:SKIP]]`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(':');
        let first = parts.next().unwrap_or("");
        let (type_name, min_regions) = match first.split_once('@') {
            Some((name, n)) => (
                name,
                n.parse()
                    .map_err(|_| format!("bad region count in '{spec}'"))?,
            ),
            None => (first, 0),
        };
        let kind = match type_name {
            "any" => None,
            name => Some(
                RequestType::ALL
                    .into_iter()
                    .find(|t| t.name().eq_ignore_ascii_case(name))
                    .ok_or_else(|| format!("unknown request type '{name}' in '{spec}'"))?,
            ),
        };
        let action_text = parts
            .next()
            .ok_or_else(|| format!("no action in '{spec}'"))?;
        let (action_text, then_good) = match action_text.strip_suffix("+good") {
            Some(a) => (a, true),
            None => (action_text, false),
        };
        let (name, value) = match action_text.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (action_text, None),
        };
        let number = |what: &str| -> Result<u64, String> {
            value
                .ok_or_else(|| format!("'{name}' needs ={what} in '{spec}'"))?
                .parse()
                .map_err(|_| format!("bad {what} in '{spec}'"))
        };
        let action = match name {
            "late" => Action::Late(number("milliseconds")?),
            "eagain" => Action::Eagain,
            "eagain-reply" => Action::EagainReply,
            "ack-only" => Action::AckOnly,
            "ack-error" => Action::AckError(number("errno")? as u32),
            "error" => Action::Error(number("errno")? as i32),
            "too-much" => Action::TooMuch,
            "short" => Action::Short,
            "value" | "value2" => {
                let v = value
                    .ok_or_else(|| format!("'{name}' needs =N in '{spec}'"))?
                    .parse()
                    .map_err(|_| format!("bad value in '{spec}'"))?;
                if name == "value" {
                    Action::Value(v)
                } else {
                    Action::Value2(v)
                }
            }
            "bad-data-size" => Action::BadDataSize,
            "truncated" => Action::Truncated,
            "wrong-luid" => Action::WrongLuid,
            "wrong-uuid" => Action::WrongUuid,
            "wrong-type" => Action::WrongType,
            "short-cn-len" => Action::ShortCnLen,
            "duplicate" => Action::Duplicate,
            "luid-zero" => Action::LuidZero,
            "type-flag" => Action::TypeFlag,
            "garbage" => Action::Garbage,
            "drop" => Action::Drop,
            "exit" => Action::Exit,
            _ => return Err(format!("unknown action '{name}' in '{spec}'")),
        };
        let mut num = |what: &str| -> Result<u64, String> {
            parts.next().map_or(Ok(0), |v| {
                v.parse().map_err(|_| format!("bad {what} in '{spec}'"))
            })
        };
        let count = num("count")?;
        let skip = num("skip")?;
        Ok(Self {
            kind,
            min_regions,
            action,
            then_good,
            count,
            skip,
            seen: 0,
            applied: 0,
        })
    }

    /// Whether the rule fires for a request of `kind` carrying `regions`,
    /// counting it.
    fn fires(&mut self, kind: Option<RequestType>, regions: usize) -> bool {
        if (self.kind.is_some() && self.kind != kind) || regions < self.min_regions {
            return false;
        }
        self.seen += 1;
        if self.seen <= self.skip || (self.count != 0 && self.applied >= self.count) {
            return false;
        }
        self.applied += 1;
        true
    }
}

/// A fault to apply to one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What to do instead of the normal answer.
    pub action: Action,
    /// Send the normal answer right after.
    pub then_good: bool,
}

/// The fault of the first rule of `rules` that fires for a request of
/// `kind` carrying `regions` (its payload's 8-byte words).
pub fn pick(rules: &mut [Rule], kind: Option<RequestType>, regions: usize) -> Option<Fault> {
    rules.iter_mut().find_map(|r| {
        r.fires(kind, regions).then_some(Fault {
            action: r.action,
            then_good: r.then_good,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let r = Rule::parse("IN_SYNC:late=17000:1").unwrap();
        assert_eq!(r.kind, Some(RequestType::InSync));
        assert_eq!(r.action, Action::Late(17000));
        let v = Rule::parse("IN_SYNC:value=-2").unwrap();
        assert_eq!(v.action, Action::Value(-2));
        assert!(Rule::parse("IN_SYNC:value").is_err());
        assert_eq!(
            Rule::parse("GET_RESYNC_WORK:value2=99").unwrap().action,
            Action::Value2(99)
        );
        let g = Rule::parse("CLEAR_REGION@2:error=22:1").unwrap();
        assert_eq!((g.kind, g.min_regions), (Some(RequestType::ClearRegion), 2));
        assert!(Rule::parse("CLEAR_REGION@x:drop").is_err());
        assert_eq!((r.count, r.skip), (1, 0));
        let r = Rule::parse("any:drop:2:3").unwrap();
        assert_eq!(
            (r.kind, r.action, r.count, r.skip),
            (None, Action::Drop, 2, 3)
        );
        assert!(Rule::parse("NOPE:drop").is_err());
        assert!(Rule::parse("FLUSH:frobnicate").is_err());
        assert!(Rule::parse("FLUSH:late").is_err());
        assert_eq!(
            Rule::parse("flush:error=5").unwrap().action,
            Action::Error(5)
        );
        let g = Rule::parse("GET_SYNC_COUNT:short-cn-len+good:1:1").unwrap();
        assert_eq!((g.action, g.then_good), (Action::ShortCnLen, true));
        assert!(!Rule::parse("IN_SYNC:luid-zero").unwrap().then_good);
        assert!(Rule::parse("IN_SYNC:+good").is_err());
    }

    #[test]
    fn counts_and_skips() {
        let mut rules = vec![Rule::parse("FLUSH:eagain:2:1").unwrap()];
        let flush = Some(RequestType::Flush);
        let got: Vec<_> = (0..5)
            .map(|_| pick(&mut rules, flush, 0).map(|f| f.action))
            .collect();
        assert_eq!(
            got,
            [None, Some(Action::Eagain), Some(Action::Eagain), None, None]
        );
        assert_eq!(pick(&mut rules, Some(RequestType::InSync), 0), None);
    }

    #[test]
    fn region_filter_skips_small_requests_uncounted() {
        let mut rules = vec![Rule::parse("CLEAR_REGION@2:error=22:1").unwrap()];
        let clear = Some(RequestType::ClearRegion);
        assert_eq!(pick(&mut rules, clear, 1), None);
        assert_eq!(
            pick(&mut rules, clear, 3),
            Some(Fault {
                action: Action::Error(22),
                then_good: false
            })
        );
        assert_eq!(pick(&mut rules, clear, 4), None);
    }
}
