namespace MLNetFinetune.Tests;

/// <summary>
/// Tests that run libtorch share this collection, which never runs beside another: libtorch is badly hurt by
/// oversubscription, and the tests use one torch thread.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection
{
    public const string Name = "Torch";
}
