using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>A pipe's buffered bytes as stored in pipes-data.img.</summary>
public sealed record PipeData(PipeDataEntry Entry, byte[] Data);
