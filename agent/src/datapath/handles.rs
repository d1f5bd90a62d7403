//! The object's maps and programs by name, typed: one place that turns a
//! missing or mistyped one into a `DatapathError`.

use aya::{
    maps::{Array, MapData},
    programs::ProgramError,
    Ebpf, Pod,
};

use super::error::*;

pub(super) fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| DatapathError::MissingMap(name.into()))?;
    T::try_from(map).map_err(map_err(name))
}

pub(super) fn typed_map_ref<'a, T>(ebpf: &'a Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map(name)
        .ok_or_else(|| DatapathError::MissingMap(name.into()))?;
    T::try_from(map).map_err(map_err(name))
}

/// Writes into array `name` the entries of `want` that differ from `have`
/// (every entry past the end of `have`: unknown), entry `i` at index `at(i)`.
pub(super) fn write_changed<V: Pod + PartialEq>(
    ebpf: &mut Ebpf,
    name: &str,
    have: &[V],
    want: &[V],
    at: impl Fn(usize) -> u32,
) -> Result<()> {
    let mut array: Array<&mut MapData, V> = typed_map(ebpf, name)?;
    for (i, v) in want.iter().enumerate() {
        if have.get(i) != Some(v) {
            array.set(at(i), *v, 0).map_err(map_err(name))?;
        }
    }
    Ok(())
}

pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

pub(super) fn program_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}
