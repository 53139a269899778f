using System.CommandLine;

var root = new RootCommand("mlnet-finetune: explore data, pretrain, finetune, evaluate, export and generate with causal language models in .NET.");
return root.Parse(args).Invoke();
