//! The order a request tries a model's deployments in: by priority, weighted-random within a
//! priority, leaving out those whose provider has no usable key.

use rand::Rng;

use crate::routing::tables::{DeploymentEntry, ModelEntry, RoutingTables};

/// Deployments in the order to try them: by priority, weighted-random within a priority,
/// skipping those whose provider has no usable key.
pub fn attempt_order<'t>(
    tables: &'t RoutingTables,
    model: &'t ModelEntry,
) -> Vec<&'t DeploymentEntry> {
    // The common case: one deployment, nothing to order.
    if let [only] = model.deployments.as_slice() {
        let usable = tables
            .providers
            .get(only.provider)
            .is_some_and(|p| p.keyless || !p.keys.is_empty());
        return if usable { vec![only] } else { Vec::new() };
    }
    let mut usable: Vec<&DeploymentEntry> = model
        .deployments
        .iter()
        .filter(|d| {
            tables
                .providers
                .get(d.provider)
                .is_some_and(|p| p.keyless || !p.keys.is_empty())
        })
        .collect();
    let mut rng = rand::rng();
    let mut ordered = Vec::with_capacity(usable.len());
    while !usable.is_empty() {
        let priority = usable[0].priority;
        let group_end = usable
            .iter()
            .position(|d| d.priority != priority)
            .unwrap_or(usable.len());
        let mut group: Vec<&DeploymentEntry> = usable.drain(..group_end).collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|d| u64::from(d.weight)).sum();
            let mut pick = rng.random_range(0..total.max(1));
            let index = group
                .iter()
                .position(|d| {
                    let weight = u64::from(d.weight);
                    if pick < weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use sluice_proto::config::v1 as pb;

    use super::*;
    use crate::routing::tables::RoutingTables;

    /// Model `m` with deployments `a` (weight 1) and `b` (weight 3) at priority 0, and `c` at
    /// priority 1, all on the fixture's provider.
    fn tables() -> RoutingTables {
        let mut fixture = crate::routing::tests::fixture();
        let deployment = |upstream_model: &str, weight, priority| pb::DeploymentConfig {
            provider_id: "pr1".into(),
            upstream_model: upstream_model.into(),
            weight,
            priority,
        };
        fixture.snapshot.models[0].deployments = vec![
            deployment("c", 1, 1),
            deployment("a", 1, 0),
            deployment("b", 3, 0),
        ];
        RoutingTables::build(&fixture.snapshot, &fixture.sealing, &[]).unwrap()
    }

    #[test]
    fn priorities_come_in_order_and_weights_share_the_first_place() {
        let tables = tables();
        let model = &tables.models[0];
        const DRAWS: usize = 4000;
        let mut b_first = 0;
        for _ in 0..DRAWS {
            let order: Vec<&str> = attempt_order(&tables, model)
                .iter()
                .map(|d| d.upstream_model.as_str())
                .collect();
            assert_eq!(order.len(), 3, "{order:?}");
            assert_eq!(order[2], "c", "the fallback priority comes last: {order:?}");
            if order[0] == "b" {
                b_first += 1;
            }
        }
        // Weight 3 of 4: first three times in four. Four standard deviations of a binomial
        // over 4000 draws is about 2.7 percentage points.
        let share = b_first as f64 / DRAWS as f64;
        assert!(
            (0.72..=0.78).contains(&share),
            "b first in {share:.3} of draws"
        );
    }

    #[test]
    fn a_provider_without_a_usable_key_is_passed_over() {
        let mut fixture = crate::routing::tests::fixture();
        fixture.snapshot.providers[0].keys.clear();
        let tables = RoutingTables::build(&fixture.snapshot, &fixture.sealing, &[]).unwrap();
        assert!(attempt_order(&tables, &tables.models[0]).is_empty());
    }
}
