package stats

import (
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
)

var latencyBuckets = view.Distribution(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)

// Views returns the views over every fnrun measure. Register them with
// view.Register, or call RegisterViews.
func Views() []*view.View {
	byDriver := []tag.Key{KeyDriver}
	return []*view.View{
		{Name: DaemonCallLatency.Name(), Description: DaemonCallLatency.Description(), Measure: DaemonCallLatency, TagKeys: []tag.Key{KeyDriver, KeyAPI, KeyOutcome}, Aggregation: latencyBuckets},
		{Name: PullLatency.Name(), Description: PullLatency.Description(), Measure: PullLatency, TagKeys: []tag.Key{KeyDriver, KeyOutcome}, Aggregation: latencyBuckets},
		{Name: Pulls.Name(), Description: Pulls.Description(), Measure: Pulls, TagKeys: []tag.Key{KeyDriver, KeyOutcome}, Aggregation: view.Count()},
		{Name: ContainerExits.Name(), Description: ContainerExits.Description(), Measure: ContainerExits, TagKeys: []tag.Key{KeyDriver, KeyStatus}, Aggregation: view.Count()},

		{Name: PoolFree.Name(), Description: PoolFree.Description(), Measure: PoolFree, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: PoolLeased.Name(), Description: PoolLeased.Description(), Measure: PoolLeased, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: PoolStarting.Name(), Description: PoolStarting.Description(), Measure: PoolStarting, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: PoolSize.Name(), Description: PoolSize.Description(), Measure: PoolSize, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: PoolMisses.Name(), Description: PoolMisses.Description(), Measure: PoolMisses, TagKeys: byDriver, Aggregation: view.Sum()},
		{Name: PoolReplacements.Name(), Description: PoolReplacements.Description(), Measure: PoolReplacements, TagKeys: byDriver, Aggregation: view.Sum()},

		{Name: ImageBytesBusy.Name(), Description: ImageBytesBusy.Description(), Measure: ImageBytesBusy, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: ImageBytesIdle.Name(), Description: ImageBytesIdle.Description(), Measure: ImageBytesIdle, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: ImageBudget.Name(), Description: ImageBudget.Description(), Measure: ImageBudget, TagKeys: byDriver, Aggregation: view.LastValue()},
		{Name: ImageEvictions.Name(), Description: ImageEvictions.Description(), Measure: ImageEvictions, TagKeys: byDriver, Aggregation: view.Sum()},
		{Name: ImageEvictionFailures.Name(), Description: ImageEvictionFailures.Description(), Measure: ImageEvictionFailures, TagKeys: byDriver, Aggregation: view.Sum()},
	}
}

// RegisterViews registers every view returned by Views.
func RegisterViews() error {
	return view.Register(Views()...)
}

// UnregisterViews undoes RegisterViews.
func UnregisterViews() {
	view.Unregister(Views()...)
}
