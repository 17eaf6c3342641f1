//! Parsers for command-line values (durations, fault rates, fault specs).
//!
//! They live in the library so they can be unit-tested, and return `String` errors so clap can
//! report them (naming the flag and the value, exit code 2).

use std::time::Duration;

use crate::faults::{FaultKind, FaultRule};
use crate::resource::Resource;

/// Delay of `slow` when no duration is given.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(3);

/// `0`, or a non-negative number with a unit: `ns`, `us`, `ms`, `s`, `m`, `h` (`50ms`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit (use e.g. 50ms, 2s)"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a number followed by a unit"))?;
    let seconds_per_unit = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?} has unknown unit {unit:?} (ns, us, ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| format!("{s:?}: {e}"))
}

/// A fraction in `[0, 1]`.
pub fn parse_fault_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{s:?} is not between 0 and 1"))
    }
}

/// A fault kind: `404`, `429`, `500`..`599`, `malformed`, `drop`, `slow` or `slow=<duration>`,
/// `wrong-id`, `nul`.
pub fn parse_fault_kind(s: &str) -> Result<FaultKind, String> {
    Ok(match s {
        "404" => FaultKind::NotFound,
        "429" => FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        "malformed" => FaultKind::MalformedJson,
        "drop" => FaultKind::DropMidBody,
        "slow" => FaultKind::SlowBody(DEFAULT_SLOW),
        "wrong-id" => FaultKind::WrongId,
        "nul" => FaultKind::NulInString,
        _ => {
            if let Some(delay) = s.strip_prefix("slow=") {
                FaultKind::SlowBody(parse_duration(delay)?)
            } else if let Ok(code @ 500..=599) = s.parse::<u16>() {
                FaultKind::ServerError(code)
            } else {
                return Err(format!(
                    "unknown fault kind {s:?} (404, 429, 500-599, malformed, drop, slow, \
                     slow=<duration>, wrong-id, nul)"
                ));
            }
        }
    })
}

/// `<id>:<kind>[:<times>]`, e.g. `25:503:2` (the first two requests for 25 get a 503).
pub fn parse_fault_spec(s: &str) -> Result<(i32, FaultRule), String> {
    let mut parts = s.split(':');
    let (Some(id), Some(kind)) = (parts.next(), parts.next()) else {
        return Err(format!("{s:?} is not <id>:<kind>[:<times>]"));
    };
    let id: i32 = id
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: id {id:?} is not an integer"))?;
    let kind = parse_fault_kind(kind.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    let times = match parts.next() {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: times {t:?} is not a non-negative integer"))?,
        ),
    };
    if parts.next().is_some() {
        return Err(format!("{s:?} is not <id>:<kind>[:<times>]"));
    }
    Ok((id, FaultRule { kind, times }))
}

/// `[<resource>/]<id>:<kind>[:<times>]`: [`parse_fault_spec`] for an id of any resource,
/// `pokemon-species/133:500` for species 133; without a resource, a pokemon id.
pub fn parse_fault_target(s: &str) -> Result<(Resource, i32, FaultRule), String> {
    let (target, rest) = s.split_once(':').unwrap_or((s, ""));
    let Some((resource, id)) = target.split_once('/') else {
        let (id, rule) = parse_fault_spec(s)?;
        return Ok((Resource::Pokemon, id, rule));
    };
    let resource = Resource::from_name(resource.trim()).ok_or_else(|| {
        let names: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
        format!(
            "{s:?}: unknown resource {resource:?} (one of {})",
            names.join(", ")
        )
    })?;
    let (id, rule) =
        parse_fault_spec(&format!("{id}:{rest}")).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((resource, id, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "50", "ms", "5 parsecs", "-1s", "1..2s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_fault_rate("0.25"), Ok(0.25));
        assert_eq!(parse_fault_rate("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "x", "NaN"] {
            assert!(parse_fault_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_specs() {
        assert_eq!(
            parse_fault_spec("25:503:2"),
            Ok((25, FaultRule::times(FaultKind::ServerError(503), 2)))
        );
        assert_eq!(
            parse_fault_spec("1:404"),
            Ok((1, FaultRule::always(FaultKind::NotFound)))
        );
        assert_eq!(
            parse_fault_spec("10001:slow=200ms"),
            Ok((
                10001,
                FaultRule::always(FaultKind::SlowBody(Duration::from_millis(200)))
            ))
        );
        for (spec, kind) in [
            (
                "3:429",
                FaultKind::TooManyRequests {
                    retry_after_secs: 1,
                },
            ),
            ("3:500", FaultKind::ServerError(500)),
            ("3:malformed", FaultKind::MalformedJson),
            ("3:drop", FaultKind::DropMidBody),
            ("3:slow", FaultKind::SlowBody(DEFAULT_SLOW)),
            ("3:wrong-id", FaultKind::WrongId),
            ("3:nul", FaultKind::NulInString),
        ] {
            assert_eq!(parse_fault_spec(spec), Ok((3, FaultRule::always(kind))));
        }
        for bad in [
            "",
            "25",
            "x:404",
            "25:418",
            "25:404:x",
            "25:404:1:2",
            "25:slow=fast",
        ] {
            assert!(parse_fault_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_targets_name_a_resource_or_mean_pokemon() {
        assert_eq!(
            parse_fault_target("pokemon-species/133:500"),
            Ok((
                Resource::PokemonSpecies,
                133,
                FaultRule::always(FaultKind::ServerError(500))
            ))
        );
        assert_eq!(
            parse_fault_target("type/10002:404:2"),
            Ok((
                Resource::Type,
                10002,
                FaultRule::times(FaultKind::NotFound, 2)
            ))
        );
        assert_eq!(
            parse_fault_target("25:503:2"),
            Ok((
                Resource::Pokemon,
                25,
                FaultRule::times(FaultKind::ServerError(503), 2)
            ))
        );
        for bad in [
            "berry/1:500",
            "move/x:500",
            "move/1",
            "move/1:teapot",
            "/1:500",
        ] {
            assert!(parse_fault_target(bad).is_err(), "{bad}");
        }
    }
}
