global using Crisp.TestSupport;
global using Xunit;
