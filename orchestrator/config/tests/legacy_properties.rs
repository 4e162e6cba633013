//! Generated legacy documents of every shape import exactly the agents the
//! legacy launcher's rule finds in them, or are refused for a real fault
//! of their own. The generator (`legacy_gen`) is shared with the fuzz
//! target `load_legacy`.

mod legacy_gen;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn generated_legacy_files_import_the_launchers_agents(
        bytes in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        legacy_gen::check(&bytes);
    }
}

#[test]
fn the_generator_draws_every_shape() {
    // Enough byte strings to see each shape's marker in some document.
    let texts: Vec<String> = (0u8..=255)
        .flat_map(|a| (0u8..16).map(move |b| [a, b, a.wrapping_mul(7), b.wrapping_add(a), 3, 1, 4, 1, 5, 9, 2, 6]))
        .map(|seed| legacy_gen::build(&seed.repeat(20)).text)
        .collect();
    for marker in [
        "core_services:\n  - { name:",
        "\n  - name: ",
        "agent_groups:\n",
        "  docker_groups:\n",
        "\ndocker_groups:\n",
        "    description: Agents of",
        "  ,",
        "volumes:\n",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(marker) || t.starts_with(marker.trim_start_matches('\n'))),
            "no generated document has `{marker}`"
        );
    }
    let repeated_section = texts.iter().any(|t| {
        let keys: Vec<&str> = t.lines().filter(|l| !l.starts_with([' ', '#'])).collect();
        keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k))
    });
    assert!(repeated_section, "no generated document repeats a top-level key");
}
