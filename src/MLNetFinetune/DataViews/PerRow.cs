using Microsoft.ML;

namespace MLNetFinetune.DataViews;

/// <summary>A value computed once per input row and shared by every getter that reads that row.</summary>
/// <param name="row">The row whose position decides when to recompute.</param>
/// <param name="compute">Computes the value from the row's current contents.</param>
public sealed class PerRow<T>(DataViewRow row, Func<T> compute)
{
    long _position = -1;
    T _value = default!;

    /// <summary>The value for the row's current position.</summary>
    public T Value
    {
        get
        {
            if (row.Position != _position)
            {
                _value = compute();
                _position = row.Position;
            }
            return _value;
        }
    }
}
