use agentwatch_common::names::map_name;

use super::probes::EBPF_OBJECT;

/// User space finds the kernel's maps by name: every name it uses must be
/// one the built object defines.
#[test]
fn every_map_name_is_in_the_object() {
    let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the built object parses");
    for name in map_name::ALL {
        assert!(
            object.maps.contains_key(*name),
            "map {name} is not in the object"
        );
    }
}
