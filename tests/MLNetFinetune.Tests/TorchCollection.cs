using MLNetFinetune.TorchSharp;

namespace MLNetFinetune.Tests;

/// <summary>
/// Tests that run libtorch share this collection, which never runs beside another: libtorch is badly hurt by
/// oversubscription. Its fixture sets one torch thread before the first of them, so a test that loads a model without
/// training (and so without setting threads) does not inherit whatever count ran before it.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection : ICollectionFixture<TorchCollection.OneTorchThread>
{
    public const string Name = "Torch";

    public sealed class OneTorchThread
    {
        public OneTorchThread() => TorchRuntime.SetThreads(1);
    }
}
