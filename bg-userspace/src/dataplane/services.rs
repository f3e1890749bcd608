//! Services in the maps: applying a configuration's services without a
//! gap, and the per-service counters a new service starts from.
use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use bg_common::{Backend, COLOURS, ColourStats, ServiceKey, ServiceValue, TunnelSource, names};

use super::{
    Dataplane, DataplaneError, Result, addr_words, backend,
    keys::{KeyOrd, port_entries},
    service_key,
};
use crate::{
    config::{Config, Service},
    model::Colour,
};

impl Dataplane {
    /// Services currently in the map, by key.
    fn current_services(&self) -> Result<BTreeMap<KeyOrd, u32>> {
        let services: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map(names::SERVICES)?)
                .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
        let mut out = BTreeMap::new();
        for item in services.iter() {
            let (k, v) = item.map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            out.insert(KeyOrd(k), v.id);
        }
        Ok(out)
    }

    /// Makes the maps match `config` without a gap: existing services keep
    /// their id (their backends are rewritten in place), new ones get an id
    /// no current service holds, with fresh counters, and are inserted only
    /// after their backends are set; services no longer configured are
    /// removed last. When the old and new sets together exceed
    /// MAX_SERVICES, the leaving services go first (the kept ones still
    /// see no gap). Returns each configured service's id, in config order.
    pub fn apply_config(&mut self, config: &Config) -> Result<Vec<u32>> {
        let current = self.current_services()?;
        let kept: Vec<&Service> = config
            .services
            .iter()
            .filter(|s| current.contains_key(&KeyOrd(service_key(s))))
            .collect();
        let fresh = config.services.len() - kept.len();
        if current.len() + fresh > bg_common::MAX_SERVICES as usize {
            self.apply_services(&kept)?;
        }
        self.apply_services(&config.services.iter().collect::<Vec<_>>())
    }

    fn apply_services(&mut self, services: &[&Service]) -> Result<Vec<u32>> {
        let current = self.current_services()?;
        let wanted: Vec<(KeyOrd, &Service)> = services
            .iter()
            .map(|s| (KeyOrd(service_key(s)), *s))
            .collect();
        // Every id in the map stays untouched while the new services are
        // added: one leaving keeps its backends and counters until removed.
        let mut used: Vec<bool> = vec![false; bg_common::MAX_SERVICES as usize];
        for &id in current.values() {
            used[id as usize] = true;
        }
        let mut ids = Vec::with_capacity(wanted.len());
        for (key, _) in &wanted {
            let id = match current.get(key) {
                Some(&id) => id,
                None => {
                    let id = used
                        .iter()
                        .position(|u| !u)
                        .ok_or(DataplaneError::NoFreeSlot)? as u32;
                    used[id as usize] = true;
                    self.reset_stats(id)?;
                    id
                }
            };
            ids.push(id);
        }
        // Tunnels before backends: a colour turned to dsr-ipip finds its
        // source in place.
        {
            let mut tunnels: Array<&mut MapData, TunnelSource> =
                Array::try_from(self.map_mut(names::TUNNELS)?)
                    .map_err(|e| DataplaneError::Map(names::TUNNELS, e))?;
            for ((_, service), &id) in wanted.iter().zip(&ids) {
                let source = match service.tunnel_source {
                    Some(ip) => {
                        let (addr_be, family) = addr_words(ip);
                        TunnelSource {
                            addr_be,
                            family,
                            _pad: [0; 3],
                        }
                    }
                    None => TunnelSource::default(),
                };
                for colour in Colour::ALL {
                    tunnels
                        .set(id * COLOURS + colour.index(), source, 0)
                        .map_err(|e| DataplaneError::Map(names::TUNNELS, e))?;
                }
            }
        }
        {
            let mut backends: Array<&mut MapData, Backend> =
                Array::try_from(self.map_mut(names::BACKENDS)?)
                    .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
            for ((_, service), &id) in wanted.iter().zip(&ids) {
                for colour in Colour::ALL {
                    let addr = match colour {
                        Colour::Blue => service.blue,
                        Colour::Green => service.green,
                    };
                    let entry = backend(addr, service.mode(colour).wire());
                    backends
                        .set(id * COLOURS + colour.index(), entry, 0)
                        .map_err(|e| DataplaneError::Map(names::BACKENDS, e))?;
                }
            }
        }
        {
            let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
                HashMap::try_from(self.map_mut(names::SERVICES)?)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            for ((key, _), &id) in wanted.iter().zip(&ids) {
                services
                    .insert(key.0, ServiceValue { id }, 0)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            }
        }
        // The port index goes live only after the services it points at, and
        // stale slots are cleared before their services are removed.
        let new_ports = port_entries(wanted.iter().map(|(k, _)| k.0).zip(ids.iter().copied()));
        let old_ports = port_entries(current.iter().map(|(k, &id)| (k.0, id)));
        {
            let mut ports: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::PORTS)?)
                .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            for (&slot, &value) in &new_ports {
                ports
                    .set(slot, value, 0)
                    .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            }
            for slot in old_ports.keys().filter(|s| !new_ports.contains_key(s)) {
                ports
                    .set(*slot, 0, 0)
                    .map_err(|e| DataplaneError::Map(names::PORTS, e))?;
            }
        }
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_mut(names::SERVICES)?)
                .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
        for key in current.keys() {
            if !wanted.iter().any(|(k, _)| k == key) {
                services
                    .remove(&key.0)
                    .map_err(|e| DataplaneError::Map(names::SERVICES, e))?;
            }
        }
        Ok(ids)
    }

    fn reset_stats(&mut self, id: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| DataplaneError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        let mut stats: PerCpuArray<&mut MapData, ColourStats> =
            PerCpuArray::try_from(self.map_mut(names::STATS)?)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
        for colour in Colour::ALL {
            let zero = PerCpuValues::try_from(vec![ColourStats::default(); cpus]).map_err(|e| {
                DataplaneError::Io {
                    path: "per-cpu values".into(),
                    source: e,
                }
            })?;
            stats
                .set(id * COLOURS + colour.index(), zero, 0)
                .map_err(|e| DataplaneError::Map(names::STATS, e))?;
        }
        Ok(())
    }
}
