using Microsoft.ML;

namespace MLNetFinetune.DataViews;

/// <summary>A value computed once per input row and shared by every getter that reads that row.</summary>
internal sealed class PerRow<T>(DataViewRow row, Func<T> compute)
{
    long _position = -1;
    T _value = default!;

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
